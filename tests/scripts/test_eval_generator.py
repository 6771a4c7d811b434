"""scripts/eval_generator.py on a tiny random generator: pictures, the FID-style score, landmark
sanity and spread, the snapshot curves and the demo drags all come out."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from server.engine.checkpoint import save_generator
from server.engine.generator import Generator, GeneratorConfig
from tests.conftest import load_script


def test_report_and_pictures(tmp_path: Path) -> None:
    ev = load_script("eval_generator")
    torch.manual_seed(0)
    cfg = GeneratorConfig(
        img_resolution=64, channel_base=256, channel_max=32, z_dim=32, w_dim=32, mapping_layers=2
    )
    G = Generator(cfg).eval()
    ckpt = save_generator(G, tmp_path / "g.safetensors")
    (tmp_path / "run" / "snapshots").mkdir(parents=True)
    for kimg in (10, 20):
        save_generator(G, tmp_path / "run" / "snapshots" / f"g_ema_{kimg:06d}.safetensors")
    out, report = tmp_path / "img", tmp_path / "eval.json"
    args = ["--checkpoint", str(ckpt), "--run", str(tmp_path / "run"), "--n", "16", "--drag-steps", "2"]
    assert ev.main([*args, "--out-dir", str(out), "--json", str(report), "--threads", "1"]) == 0
    r = json.loads(report.read_text())
    spread = r["landmark_spread_px"]
    assert set(spread) == {"generated_psi1", "generated_psi0.7", "rendered", "ratio_psi1"}
    assert all(v >= 0 for v in spread.values()) and spread["rendered"] > 0
    assert spread["ratio_psi1"] == spread["generated_psi1"] / spread["rendered"]
    sharp = r["sharpness"]
    assert sharp["edge_ratio"] > 0 and sharp["flat_ratio"] > 0 and sharp["rendered"]["flat"] > 0
    assert r["fid_over_floor"] > 1 and r["psnr_vs_render"] is None  # not a distilled model
    assert [c["kimg"] for c in r["curve"]] == [10, 20] and all("landmark_spread_px" in c for c in r["curve"])
    assert len(r["drags"]) == 4
    for name in (
        "generator_grid",
        "generator_renders",
        "generator_truncation",
        "generator_fid_curve",
        "generator_spread_curve",
    ):
        assert (out / f"{name}.png").is_file()


def test_distilled_model_is_scored_against_its_own_renders(tmp_path: Path) -> None:
    """A generator whose z names a render gets the PSNR of each image against that render."""
    from server.synthfaces import N_SLOTS
    from server.training.distill import LATENT_KIND

    ev = load_script("eval_generator")
    torch.manual_seed(0)
    cfg = GeneratorConfig(
        img_resolution=32,
        channel_base=256,
        channel_max=32,
        z_dim=N_SLOTS,
        w_dim=32,
        mapping_layers=2,
        extra={"latent": LATENT_KIND},
    )
    ckpt = save_generator(Generator(cfg).eval(), tmp_path / "g.safetensors")
    report = tmp_path / "eval.json"
    args = ["--checkpoint", str(ckpt), "--n", "8", "--no-drags", "--out-dir", str(tmp_path / "img")]
    assert ev.main([*args, "--json", str(report), "--threads", "1"]) == 0
    r = json.loads(report.read_text())
    assert r["drags"] == []
    m = r["psnr_vs_render"]
    assert 0 < m["p10_db"] <= m["median_db"] and 0 < m["mean_db"] < 30  # an untrained model is far off
