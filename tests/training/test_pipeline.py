"""`livedrag train`'s pipeline on a tiny random generator: the model folder, resuming, the plan, the
landmark-free edits and the evaluation's measures."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from server.engine.checkpoint import load_generator, save_generator
from server.engine.encoder import encode, load_encoder
from server.engine.generator import Generator, to_uint8
from server.engine.predict_session import PredictSession
from server.engine.predictor_io import load_predictor
from server.models import ModelCard, ModelLibrary
from server.training.evaluate import outside_change, redetect
from server.training.pipeline import TrainRequest, run_pipeline
from server.training.plan import BUDGET_SPLIT, STAGES, Rates, expected_seconds, plan_for_budget, preset
from server.training.predictor_train import PredictorTrainConfig, train_stage2
from server.training.trajectories import (
    KIND_CONTRAST,
    KIND_LONG,
    LONG_LENGTH,
    TrajectoryConfig,
    contrast_points,
    make_shard,
)
from tests.conftest import tiny_config


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    G = Generator(tiny_config()).eval().requires_grad_(False)
    return save_generator(G, tmp_path / "g.safetensors")


def tiny_request(ckpt: Path, out: Path, **kw) -> TrainRequest:
    return TrainRequest(checkpoint=ckpt, out=out, preset="tiny", threads=1, progress=False, **kw)


def outputs(out: Path) -> dict[str, int]:
    """Modification times of every file a stage writes (the report and the log aside)."""
    keep = [p for p in out.rglob("*") if p.is_file() and p.name not in ("report.json", "report.md")]
    return {str(p): p.stat().st_mtime_ns for p in keep if p.name not in ("train.log", "stages.json")}


def test_tiny_pipeline_makes_a_library_model_and_a_second_run_recomputes_nothing(
    ckpt: Path, tmp_path: Path, one_torch_thread
) -> None:
    """The tiny preset writes card, generator, predictor and encoder that ModelLibrary.check accepts
    with all three modes and that drive a predict drag and an encoder projection, and a report with
    every stage's time and throughput; running the same request again skips every stage and
    rewrites no stage output."""
    out = tmp_path / "lib" / "tiny1"
    report = run_pipeline(tiny_request(ckpt, out))
    result = ModelLibrary(tmp_path / "lib").check("tiny1")
    assert result.ok, result.errors
    assert result.modes == ("optimize", "predict", "encoder")
    assert report["last_run"]["ran"] == list(STAGES) and report["last_run"]["skipped"] == []
    for name in ("trajectories", "stage1", "stage2", "encoder"):
        s = report["stages"][name]
        assert s["status"] == "done" and s["units"] > 0 and s["per_s"] > 0, (name, s)
    assert report["stages"]["stage2"]["units"] == 6 and report["stages"]["stage2"]["unit"] == "iterations"
    rows = report["evaluation"]["drags"]["rows"]
    assert {(r["protocol"], r["method"]) for r in rows} == {
        (p, m) for p in ("shift", "long") for m in ("optimize", "predict")
    }
    assert np.isfinite(report["evaluation"]["encoder"]["psnr_mean"])
    md = (out / "report.md").read_text()
    assert "| stage2 | done |" in md and "iterations/s" in md and "Library check: ok" in md
    # the files drive the engine: a predict drag steps, the encoder projects an image
    G = load_generator(out / "generator.safetensors")
    model = load_predictor(out / "predictor.safetensors", G=G)
    step = PredictSession.from_seed(G, 0, [(10, 10)], [(16, 10)], model=model).step()
    assert step.step == 1 and step.frame.shape == (32, 32, 3)
    img = to_uint8(G.synthesis(G.ws_from_seed(1))[0])
    assert encode(load_encoder(out / "encoder.safetensors", G), img).shape == (1, G.num_ws, G.w_dim)

    before = outputs(out)
    again = run_pipeline(tiny_request(ckpt, out))
    assert again["last_run"]["ran"] == [] and again["last_run"]["skipped"] == list(STAGES)
    assert outputs(out) == before
    assert len(again["history"]) == 2
    assert again["stages"]["stage2"]["runs"] == 1  # the first run's figures are kept
    log = (out / "training" / "train.log").read_text()
    assert log.count("stage2: running") == 1 and log.count("stage2: skipped") == 1


def test_until_stops_early_and_the_next_run_continues_a_stage_from_its_checkpoint(
    ckpt: Path, tmp_path: Path, one_torch_thread
) -> None:
    """--until stage1 leaves an optimize-only model; stage 2 interrupted at iteration 3 of 6 goes on
    from its checkpoint in the next run (3 iterations run), and the earlier stages are skipped."""
    out = tmp_path / "lib" / "m"
    first = run_pipeline(tiny_request(ckpt, out, until="stage1"))
    assert first["last_run"]["ran"] == ["trajectories", "stage1"]
    assert ModelCard.load(out).modes == ("optimize",)
    assert ModelLibrary(tmp_path / "lib").check("m").modes == ("optimize",)

    plan = json.loads((out / "training" / "plan.json").read_text())["plan"]
    cfg = PredictorTrainConfig(**{**plan["stage2"], "feature_blocks": None})
    cfg = replace(cfg, out=out / "training" / "predictor", traj=out / "training" / "trajectories", iters=3)

    class Bar:
        def update(self, n: int = 1) -> None: ...
        def set_postfix(self, *a, **k) -> None: ...
        def close(self) -> None: ...

    assert train_stage2(load_generator(ckpt), cfg, torch.device("cpu"), lambda *a: Bar())["iter"] == 3

    second = run_pipeline(tiny_request(ckpt, out))
    assert second["last_run"]["skipped"] == ["trajectories", "stage1"]
    assert second["last_run"]["ran"] == ["stage2", "encoder", "evaluate"]
    assert second["stages"]["stage2"]["units"] == 3  # iterations 3..6, not 0..6
    assert ModelLibrary(tmp_path / "lib").check("m").modes == ("optimize", "predict", "encoder")


def test_other_sizes_a_foreign_folder_and_a_bad_name_are_refused(ckpt: Path, tmp_path: Path) -> None:
    """A folder started with other sizes is not resumed with them; a folder not made by the
    pipeline is not written into; a folder name that cannot be a model name is refused."""
    out = tmp_path / "m"
    run_pipeline(tiny_request(ckpt, out, until="trajectories"))
    with pytest.raises(ValueError, match="was started with preset tiny"):
        run_pipeline(tiny_request(ckpt, out, until="trajectories", drags=8))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not made by livedrag train"):
        run_pipeline(tiny_request(ckpt, foreign))
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    with pytest.raises(ValueError, match="bad model name"):
        run_pipeline(tiny_request(ckpt, tmp_path / "two words"))


def test_a_budget_gives_each_stage_its_share() -> None:
    """plan_for_budget sizes every stage so that its expected time is its share of the budget
    (within rounding), and twice the budget about doubles every size."""
    rates = Rates(
        teacher_steps_per_s=40.0,
        single_steps_per_s=20.0,
        stage1_iters_per_s=15.0,
        stage2_iters_per_s=2.0,
        encoder_steps_per_s=3.0,
    )
    base = preset("small", 64)
    one = plan_for_budget(base, 3600.0, rates)
    got = expected_seconds(one, rates)
    for stage, share in BUDGET_SPLIT.items():
        assert got[stage] == pytest.approx(share * 3600, rel=0.1), (stage, got[stage])
    two = plan_for_budget(base, 7200.0, rates).sizes()
    for key in ("drags", "stage1_iters", "stage2_iters", "encoder_steps", "eval_edits"):
        assert two[key] == pytest.approx(2 * one.sizes()[key], rel=0.1), key
    assert one.stage2.d_model == base.stage2.d_model and one.encoder.channels == (32, 64, 128, 160)


def test_contrast_points_sit_on_edges_apart_from_each_other() -> None:
    """On an image whose only edge is a vertical line at x = 15/16, every point lies on it, at least
    res/32 px from the others and inside ``near``; a flat image falls back to points inside the margin."""
    img = np.zeros((32, 32, 3), np.uint8)
    img[:, 16:] = 255
    rng = np.random.default_rng(0)
    pts = contrast_points(img, 5, rng)
    assert pts.shape == (5, 2) and set(pts[:, 0].tolist()) <= {15.0, 16.0}
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1) + 100 * np.eye(5)
    assert d.min() >= 1.0
    near = contrast_points(img, 3, rng, near=(16, 8, 4))
    assert (np.abs(near[:, 1] - 8) <= 4).all()
    flat = contrast_points(np.full((32, 32, 3), 128, np.uint8), 4, rng)
    assert flat.shape == (4, 2) and ((flat >= 1) & (flat <= 30)).all()


def test_landmark_free_shards_hold_contrast_and_long_drags(tiny_G: Generator, one_torch_thread) -> None:
    """With the new kinds at 50% each there are only contrast and long drags, and a long drag's
    targets lie 8-25% of the image (give or take the jitter and the border) from its handles."""
    cfg = TrajectoryConfig(shards=1, per_shard=6, batch=6, max_steps=2, contrast_frac=0.5, long_frac=0.5)
    trajs = make_shard(tiny_G, 0, cfg)
    kinds = {t["kind"] for t in trajs}
    assert kinds <= {KIND_CONTRAST, KIND_LONG} and KIND_LONG in kinds
    res = tiny_G.img_resolution
    for t in trajs:
        if t["kind"] == KIND_LONG:
            move = np.linalg.norm(t["targets"] - t["handles"][0], axis=1).max()
            assert move <= LONG_LENGTH[1] * res + 2


def test_redetect_follows_moved_features_and_outside_change_ignores_the_edit() -> None:
    """Re-detection finds a handle where its feature moved to (and at its start when nothing moved);
    outside_change counts only pixels far from the points."""
    torch.manual_seed(0)
    f0 = torch.randn(8, 32, 32)
    f1 = torch.roll(f0, shifts=(1, 2), dims=(1, 2))  # content 2 px right, 1 px down
    h = np.array([[10.0, 12.0], [20.0, 5.0]], np.float32)
    t = h + np.array([3.0, 0.0], np.float32)
    assert redetect(f0, f1, h, t).tolist() == [[12.0, 13.0], [22.0, 6.0]]
    assert redetect(f0, f0, h, t).tolist() == h.tolist()
    a = np.zeros((32, 32, 3), np.uint8)
    b = a.copy()
    b[14:18, 14:18] = 200  # a change near the point only
    assert outside_change(a, b, np.array([[16.0, 16.0]])) == 0.0
    b[0, 0] = 255
    assert outside_change(a, b, np.array([[16.0, 16.0]])) > 0
