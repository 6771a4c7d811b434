"""Renderer distillation: targets, mixing, a loop that learns and resumes bit for bit, exports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from server.engine.checkpoint import load_generator
from server.synthfaces import N_SLOTS, mix_params, params_from_z, render, render_seed
from server.training.distill import LATENT_KIND, DistillConfig, DistillTrainer
from server.training.distill_data import (
    Renderer,
    attributes,
    psnr,
    render_faces,
    sobel,
)
from tests.conftest import load_script


def tiny(**kw) -> DistillConfig:
    base = dict(
        res=16,
        channel_base=256,
        channel_max=32,
        w_dim=32,
        mapping_layers=2,
        batch=4,
        total_kimg=1.0,
        log_kimg=0.008,
        grid_kimg=1000,
        snap_kimg=1000,
        ckpt_kimg=1000,
        pretrain_steps=20,
    )
    base.update(kw)
    return DistillConfig(**base)


def test_targets_are_the_renders_of_the_latents_and_mixes():
    """render_faces draws params_from_z; with a second latent, A's geometry in B's colours."""
    z = np.random.default_rng(0).standard_normal((2, N_SLOTS))
    imgs = render_faces(z, 16)
    assert np.array_equal(imgs[0], render(params_from_z(z[0]), 16)[0])
    mixed = render_faces(z[:1], 16, mix_with=z[1:])
    assert np.array_equal(mixed[0], render(mix_params(params_from_z(z[0]), params_from_z(z[1])), 16)[0])


def test_worker_processes_render_the_same_batch():
    """Rendering in worker processes changes nothing but the speed."""
    z = np.random.default_rng(1).standard_normal((5, N_SLOTS))
    r = Renderer(16, workers=2)
    try:
        assert np.array_equal(r.submit(z, None).result(), render_faces(z, 16))
    finally:
        r.close()


def test_sobel_sees_edges_not_flat_areas():
    flat = torch.zeros(1, 3, 8, 8)
    step = torch.zeros(1, 3, 8, 8)
    step[..., 4:] = 1.0
    assert sobel(flat).abs().max() == 0
    assert sobel(step).abs().max() > 0.4
    assert psnr(flat, flat + 0.02).item() == pytest.approx(10 * np.log10(4 / 0.0004), rel=1e-4)


def test_training_learns_and_resumes_bit_for_bit(tmp_path, one_torch_thread):
    """The loss falls within a few dozen steps; 2 steps + resume + 2 steps equal 4 steps."""
    a = DistillTrainer(tiny(), tmp_path / "a")
    first = [a.train_step()["l1"] for _ in range(4)]
    a.run(max_steps=36, progress=False)
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert np.mean([r["l1"] for r in log[-3:]]) < 0.8 * np.mean(first)

    b = DistillTrainer(tiny(), tmp_path / "b")
    b.run(max_steps=4, progress=False)
    c = DistillTrainer(tiny(), tmp_path / "c")
    c.run(max_steps=2, progress=False)
    c = DistillTrainer.resume(tmp_path / "c")
    c.run(max_steps=2, progress=False)
    for (k, pb), pc in zip(b.G_ema.state_dict().items(), c.G_ema.state_dict().values(), strict=True):
        assert torch.equal(pb, pc), k


def test_mapping_pretraining_teaches_w_the_face_parameters(tmp_path, one_torch_thread):
    """The linear read-out of the face's parameters from w improves, before any rendering."""
    t = DistillTrainer(tiny(pretrain_steps=60), tmp_path)
    z = np.random.default_rng(9).standard_normal((128, N_SLOTS))

    def readout_mse() -> float:
        with torch.no_grad():
            return t.readout.loss(t.G.mapping(torch.from_numpy(z).float())[:, 0], z).item()

    before = readout_mse()
    t.pretrain_mapping(progress=False)
    assert t.pretrained and readout_mse() < 0.7 * before
    assert attributes(z[:2]).shape[0] == 2


def test_a_critic_can_join_a_run_and_resumes_with_it(tmp_path, one_torch_thread):
    """adv_weight > 0 on resume adds a fresh discriminator; its state is checkpointed from then on."""
    t = DistillTrainer(tiny(), tmp_path)
    t.run(max_steps=2, progress=False)
    t = DistillTrainer.resume(tmp_path, overrides={"adv_weight": 0.05})
    assert t.critic is not None and t.critic.steps == 0
    t.run(max_steps=3, progress=False)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert "d_loss" in log[-1] and log[-1]["adv"] > 0
    again = DistillTrainer.resume(tmp_path)
    assert again.critic is not None and again.critic.steps == 3
    for a, b in zip(again.critic.D.parameters(), t.critic.D.parameters(), strict=True):
        assert torch.equal(a, b)


def test_resume_refuses_other_settings(tmp_path):
    t = DistillTrainer(tiny(), tmp_path)
    t.save_checkpoint()
    with pytest.raises(ValueError, match="cannot change"):
        DistillTrainer.resume(tmp_path, overrides={"lr": 0.1})
    assert DistillTrainer.resume(tmp_path, overrides={"total_kimg": 5.0}).cfg.total_kimg == 5.0


def test_snapshot_loads_as_a_generator_whose_seed_names_a_render(tmp_path):
    """The export is an ordinary livedrag checkpoint; its config says z names a render."""
    t = DistillTrainer(tiny(), tmp_path)
    path = t.save_snapshot(tmp_path / "g.safetensors")
    G = load_generator(path)
    assert G.z_dim == N_SLOTS and G.img_resolution == 16
    assert G.cfg.extra["latent"] == LATENT_KIND
    img, _ = G.synthesize(G.ws_from_seed(3))
    assert img.shape == (1, 3, 16, 16)
    assert render_seed(3, 16)[0].shape == (16, 16, 3)


def test_mixing_takes_rows_from_two_faces(tmp_path, monkeypatch):
    """A mixed batch feeds rows < mix_cut from face A and the rest from face B."""
    t = DistillTrainer(tiny(mix_prob=1.0, mix_cut=3), tmp_path)
    seen = {}
    real = t.G.synthesis.forward

    def spy(ws, **kw):
        seen["ws"] = ws.detach().clone()
        return real(ws, **kw)

    monkeypatch.setattr(t.G.synthesis, "forward", spy)
    t._next = t._draw()
    zb = t._next[2]
    t.train_step()
    ws = seen["ws"]
    assert zb is not None
    assert not torch.equal(ws[:, 2], ws[:, 3])
    assert torch.equal(ws[:, 0], ws[:, 2]) and torch.equal(ws[:, 3], ws[:, -1])


def test_flat_loss_counts_ripples_where_the_render_is_flat_only():
    """The flat term sees a faint ripple on a flat render, and ignores a weaker response on the
    render's edge itself (the all-pixel edge term sees that)."""
    import torch

    from server.training.distill import flat_loss
    from server.training.distill_data import sobel

    target = torch.zeros(1, 3, 16, 16)
    target[..., 8:] = 1.0  # one vertical edge, flat elsewhere
    ripple = target + 0.02 * torch.sin(torch.arange(16.0) * 2.0).view(1, 1, 1, 16)
    g_t = sobel(target)
    assert flat_loss(sobel(target), g_t, 0.02) == 0
    assert flat_loss(sobel(ripple), g_t, 0.02) > 0.005
    weaker = torch.where(g_t.abs() >= 0.02, 0.5 * g_t, g_t)  # half the edge's response
    assert flat_loss(weaker, g_t, 0.02) == 0 < (weaker - g_t).abs().mean()
    # a soft edge leaks into its rim: counted as flat-area ripple unless the margin leaves it out
    soft = target.clone()
    soft[..., 9] = 0.99  # the render's edge is at 7-8; 2 px on, a faint step (a shifted edge)
    g_soft = sobel(soft)
    assert flat_loss(g_soft, g_t, 0.02) > 0
    assert flat_loss(g_soft, g_t, 0.02, margin=3) == 0
    assert flat_loss(sobel(ripple), g_t, 0.02, margin=3) > 0.005  # ripples far from it still count


def test_stop_kimg_ends_a_chunk_without_moving_the_schedule(tmp_path, one_torch_thread):
    """A chunk stops at stop_kimg (batch 4: 0.008 kimg = 2 steps) with the schedule of total_kimg;
    two chunks split there equal one run, and the script does nothing once past it."""
    a = DistillTrainer(tiny(), tmp_path / "a")
    assert a.run(progress=False, stop_kimg=0.008) == "kimg"
    assert a.step == 2 and a.cfg.total_kimg == 1.0
    a = DistillTrainer.resume(tmp_path / "a")
    a.run(max_steps=2, progress=False)
    b = DistillTrainer(tiny(), tmp_path / "b")
    b.run(max_steps=4, progress=False)
    for (k, pa), pb in zip(a.G_ema.state_dict().items(), b.G_ema.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), k

    main = load_script("train_distill").main
    before = (tmp_path / "a" / "checkpoint.pt").read_bytes()
    argv = ["--out", str(tmp_path / "a"), "--resume", "--stop-kimg", "0.008", "--no-progress"]
    assert main([*argv, "--adv-weight", "0.1"]) == 0
    assert (tmp_path / "a" / "checkpoint.pt").read_bytes() == before  # untouched, weights too
