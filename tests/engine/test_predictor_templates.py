"""The predictor's template input: each point token also reads its handle's tracking template
(``PredictorConfig.template_block``), in the network, in predict sessions and in training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from server.engine.generator import Generator
from server.engine.predict_options import PredictOptions
from server.engine.predict_session import PredictSession, predict_step_batch
from server.engine.predictor import LatentPredictor, PredictorConfig
from server.engine.predictor_io import load_predictor
from server.training.predictor_losses import Pairs, start_templates
from tests.conftest import load_script, small_predictor
from tests.engine.test_predictor import predictor_inputs, shard_args, tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_template_input_config(tiny_G: Generator) -> None:
    cfg = PredictorConfig.for_generator(tiny_G, d_model=32, n_heads=2, template_input=True)
    track = tiny_G.default_feature_block()
    assert cfg.template_block == track and cfg.template_channels == tiny_G.cfg.channels(track)
    assert PredictorConfig.from_dict(cfg.to_dict()) == cfg
    assert PredictorConfig.for_generator(tiny_G).template_block == 0  # off unless asked
    with pytest.raises(ValueError, match="template_block"):
        PredictorConfig(feature_blocks=(32, 64), template_block=16, template_channels=8)
    with pytest.raises(ValueError, match="template_channels"):
        PredictorConfig(feature_blocks=(32, 64), template_block=64, template_channels=0)
    with pytest.raises(ValueError, match="tracking block"):
        PredictorConfig.for_generator(tiny_G, feature_blocks=(16,), template_input=True)


def test_template_input_starts_silent_then_reads_each_points_template(tiny_G: Generator) -> None:
    """Added at zero, the input changes nothing (a trained predictor keeps its outputs); once
    trained it reads the templates of valid points only; a missing or misshapen one is refused."""
    kw = dict(d_model=32, n_heads=2, enc_layers=1, dec_layers=1)
    plain = LatentPredictor(PredictorConfig.for_generator(tiny_G, **kw)).eval()
    torch.nn.init.normal_(plain.head.weight, std=0.1)
    cfg = PredictorConfig.for_generator(tiny_G, template_input=True, **kw)
    P = LatentPredictor(cfg).eval()
    missing, unexpected = P.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("point_tpl.") for k in missing)
    gen = torch.Generator().manual_seed(0)
    rows, feats, h, t, s, p = predictor_inputs(cfg, 2, 3, gen)
    h = h.round()
    tpl = torch.randn(2, 3, cfg.template_channels, generator=gen)
    assert torch.allclose(P(rows, feats, h, t, s, p, None, tpl), plain(rows, feats, h, t, s, p), atol=1e-6)
    torch.nn.init.normal_(P.point_tpl[1].weight, std=0.3)
    a = P(rows, feats, h, t, s, p, None, tpl)
    assert not torch.allclose(a, P(rows, feats, h, t, s, p, None, tpl * 2), atol=1e-4)
    valid = torch.tensor([[True, True, False]] * 2)
    other = tpl.clone()
    other[:, 2] = 5.0  # a padded point's template is not read
    assert torch.allclose(P(rows, feats, h, t, s, p, valid, tpl), P(rows, feats, h, t, s, p, valid, other))
    for bad in (None, tpl[:, :2], tpl[..., :-1]):
        with pytest.raises(ValueError, match="templates"):
            P(rows, feats, h, t, s, p, None, bad)


def recorded_templates(model) -> list[torch.Tensor]:
    """Wrap the bundle's predictor so that every call records the templates it was given."""
    seen: list[torch.Tensor] = []
    forward = model.predictor.forward

    def spy(*args, **kwargs):
        seen.append(args[7].clone())
        return forward(*args, **kwargs)

    model.predictor.forward = spy
    return seen


def test_sessions_give_the_predictor_their_tracking_templates(tiny_G: Generator) -> None:
    """A predict step passes each handle's tracking template (padded in a batch); re-placed points
    pass their new templates; stepping in a batch is stepping alone; a session tracking on
    another block than the predictor's templates is refused."""
    model = small_predictor(tiny_G, moving=True, template_input=True)
    seen = recorded_templates(model)

    def make() -> list[PredictSession]:
        return [
            PredictSession.from_seed(tiny_G, 0, [(10, 12)], [(18, 12)], model=model),
            PredictSession.from_seed(tiny_G, 1, [(20, 20), (5, 5)], [(20, 10), (9, 5)], model=model),
        ]

    alone, batched = make(), make()
    for _ in range(3):
        ra = [s.step() for s in alone]
        rb = predict_step_batch(batched)
        for x, y in zip(ra, rb, strict=True):
            assert np.allclose(x.handles, y.handles) and np.abs(x.frame.astype(int) - y.frame).max() <= 1
    for x, y in zip(alone, batched, strict=True):
        assert torch.allclose(x.latent(), y.latent(), atol=1e-4)
    tpl0, tpl1 = alone[0].templates()[0], alone[1].templates()[0]
    assert torch.equal(seen[0][0], tpl0) and torch.equal(seen[1][0], tpl1)
    last = seen[-1]  # the batch: the one-point session padded to two points
    assert last.shape == (2, 2, tpl0.shape[1])
    assert torch.allclose(last[0, :1], tpl0, atol=1e-5) and torch.allclose(last[1], tpl1, atol=1e-5)
    s = alone[1]
    s.set_points([(20, 20), (12, 16)], [(20, 10), (14, 16)])
    s.step()
    assert torch.equal(seen[-1][0], s.templates()[0]) and not torch.equal(seen[-1][0], tpl1)
    with pytest.raises(ValueError, match="templates of block"):
        PredictSession.from_seed(
            tiny_G, 0, [(10, 12)], [(18, 12)], options=PredictOptions(feature_blocks=(16,)), model=model
        )


def test_start_templates_are_what_a_session_takes_at_its_first_step(tiny_G: Generator) -> None:
    with torch.no_grad():
        w0 = torch.cat([tiny_G.ws_from_seed(s) for s in (3, 4)])
    handles = torch.tensor(
        [
            [[10.2, 12.7], [0.0, 0.0]],
            [[11.0, 11.0], [11.0, 11.0]],
            [[20.4, 5.6], [3.0, 30.0]],
            [[0.0, 0.0], [0.0, 0.0]],
        ]
    )
    data = {  # two drags: one point, then two, each two steps long
        "w0": w0,
        "handles": handles,
        "offsets": torch.tensor([0, 2, 4]),
        "n_points": torch.tensor([1, 2]),
    }
    block = tiny_G.default_feature_block()
    got = start_templates(tiny_G, data, block, batch=1)
    assert got.shape == (2, 2, tiny_G.cfg.channels(block))
    assert torch.equal(got[0, 1], torch.zeros_like(got[0, 1]))  # a padded point
    model = small_predictor(tiny_G, template_input=True)
    for i, (a, k) in enumerate(((0, 1), (2, 2))):
        s = PredictSession(
            tiny_G, w0[i : i + 1], handles[a, :k], (handles[a, :k] + 4).clamp(max=31), model=model
        )
        s.step()
        assert torch.allclose(got[i, :k], s.templates()[0], atol=1e-5)


def test_pairs_carry_the_templates_of_their_drags() -> None:
    n_rows, d = 2, 4
    data = {
        "w0": torch.zeros(2, 3, d),
        "dw": torch.randn(6, n_rows, d, generator=torch.Generator().manual_seed(0)),
        "handles": torch.tensor([[[1.0, 1.0]], [[3.0, 1.0]], [[5.0, 1.0]]] * 2),
        "targets": torch.tensor([[[9.0, 1.0]], [[9.0, 1.0]]]),
        "offsets": torch.tensor([0, 3, 6]),
        "n_points": torch.tensor([1, 1]),
    }
    tpl = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]])
    pairs = Pairs(data, np.array([0, 1]), 2.0, 0.0, templates=tpl)
    b = pairs.batch(8, np.random.default_rng(0), torch.device("cpu"))
    picked = b["templates"][:, 0, 0]
    assert set(picked.tolist()) <= {1.0, 3.0} and b["templates"].shape == (8, 1, 2)
    plain = Pairs(data, np.array([0, 1]), 2.0, 0.0)
    assert "templates" not in plain.batch(2, np.random.default_rng(0), torch.device("cpu"))


def test_template_input_added_to_a_trained_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """train_predictor --template-input on a stage-2 run trained without it adds the input (at
    zero) and goes on from its iteration; the exported file reads templates in a session."""
    ckpt = tiny_checkpoint(tmp_path)
    mt, tp = load_script("make_trajectories"), load_script("train_predictor")
    traj = tmp_path / "traj"
    shards = [*shard_args(ckpt, traj, max_steps=5), "--shards", "1", "--no-detector", "--no-progress"]
    assert mt.main(shards) == 0
    run = tmp_path / "run"
    base = ["--checkpoint", ckpt, "--out", str(run), "--no-progress", "--ckpt-every", "2"]
    base += ["--eval-every", "2"]
    assert tp.main([*base, "--stage", "1", "--iters", "4", "--batch", "8", "--reg-hidden", "16"]) == 0
    small = ["--d-model", "16", "--heads", "2", "--enc-layers", "1", "--dec-layers", "1", "--grid", "2"]
    stage2 = [*base, "--stage", "2", "--traj", str(traj), "--batch", "4", "--feat-batch", "2", *small]
    assert tp.main([*stage2, "--iters", "2"]) == 0
    capsys.readouterr()
    assert tp.main([*stage2, "--iters", "4", "--template-input", "--template-weight", "1"]) == 0
    text = capsys.readouterr().out
    assert "added the template input" in text and "iterations 2..4" in text
    assert tp.main([*stage2, "--iters", "5", "--template-input"]) == 0  # resumes as usual
    assert "added the template input" not in capsys.readouterr().out
    out = tmp_path / "pred.safetensors"
    assert tp.main(["--checkpoint", ckpt, "--out", str(run), "--export", str(out)]) == 0
    from server.engine.checkpoint import load_generator

    G = load_generator(ckpt)
    model = load_predictor(out, G=G)
    assert model.predictor.cfg.template_block == G.default_feature_block()
    s = PredictSession.from_seed(G, 0, [(10, 10)], [(16, 10)], model=model)
    assert s.step().step == 1 and s.step().step == 2
