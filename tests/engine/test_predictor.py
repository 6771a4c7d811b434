"""Latent Predictor, Regularizer, predictor files, predictor-mode sessions and the training scripts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from server.engine.checkpoint import save_generator
from server.engine.generator import Generator, to_uint8
from server.engine.predict_options import PredictOptions
from server.engine.predict_session import PredictSession, predict_step_batch
from server.engine.predictor import LatentPredictor, PredictorConfig, latent_stats
from server.engine.predictor_io import (
    GeneratorIdentity,
    PredictorError,
    PredictorMismatchError,
    PredictorNotFoundError,
    load_predictor,
    save_predictor,
)
from server.engine.regularizer import LatentRegularizer, RegularizerConfig, perturb_latents
from server.engine.session import EditSession, StepResult
from tests.conftest import (
    NO_SHIPPED_PREDICTOR,
    load_script,
    shipped_predictor_fits,
    small_predictor,
    tiny_config,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def predictor_inputs(cfg: PredictorConfig, b: int, k: int, gen: torch.Generator) -> tuple:
    rows = torch.randn(b, cfg.n_rows, cfg.w_dim, generator=gen)
    chans = {16: 32, 32: 16}
    feats = [torch.randn(b, chans[r], r, r, generator=gen) for r in cfg.feature_blocks]
    res = cfg.img_resolution
    handles = torch.rand(b, k, 2, generator=gen) * (res - 1)
    targets = torch.rand(b, k, 2, generator=gen) * (res - 1)
    substep = (targets - handles).clamp(-2, 2)
    progress = torch.rand(b, k, generator=gen)
    return rows, feats, handles, targets, substep, progress


# -- networks ----------------------------------------------------------------------------------------


def test_predictor_shapes_padding_and_identity_at_init(tiny_G: Generator) -> None:
    """Output is [B, n_rows, w_dim]; zero-initialised head = identity; padded points are ignored."""
    cfg = PredictorConfig.for_generator(tiny_G, d_model=32, n_heads=2, enc_layers=1, dec_layers=1)
    assert cfg.feature_blocks == (16, 32) and cfg.feature_channels == 48 and cfg.n_rows == 6
    P = LatentPredictor(cfg).eval()
    gen = torch.Generator().manual_seed(0)
    rows, feats, h, t, s, p = predictor_inputs(cfg, 3, 4, gen)
    out = P(rows, feats, h, t, s, p)
    assert out.shape == (3, 6, 32) and torch.equal(out, rows)
    torch.nn.init.normal_(P.head.weight, std=0.1)
    valid = torch.tensor([[True, True, False, False]] * 3)
    a = P(rows, feats, h, t, s, p, valid)
    h2, t2 = h.clone(), t.clone()
    h2[:, 2:] = 5.0
    t2[:, 2:] = 9.0
    b = P(rows, feats, h2, t2, s, p, valid)
    assert not torch.equal(a, rows) and torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a[:, :, :], P(rows, feats, h[:, :2], t[:, :2], s[:, :2], p[:, :2]), atol=1e-5)
    with pytest.raises(ValueError, match="rows"):
        P(rows[:, :3], feats, h, t, s, p)
    for bad in ({"n_rows": 0}, {"d_model": 30, "n_heads": 4}, {"feature_blocks": ()}):
        with pytest.raises(ValueError):
            PredictorConfig(**bad)


def test_bilinear_head_is_silent_for_a_zero_substep(tiny_G: Generator) -> None:
    """The learned-directions head moves the latent only for points asked to move."""
    cfg = PredictorConfig.for_generator(tiny_G, d_model=32, n_heads=2, enc_layers=1, dec_layers=1)
    assert cfg.n_directions == 64
    P = LatentPredictor(cfg).eval()
    torch.nn.init.normal_(P.dir_coef.weight, std=0.1)
    rows, feats, h, t, s, p = predictor_inputs(cfg, 2, 3, torch.Generator().manual_seed(2))
    assert torch.equal(P(rows, feats, h, t, torch.zeros_like(s), p), rows)
    assert not torch.allclose(P(rows, feats, h, t, s, p), rows)
    valid = torch.tensor([[True, False, False]] * 2)
    s_pad = s.clone()
    s_pad[:, 1:] = 0.0
    assert torch.allclose(P(rows, feats, h, t, s, p, valid), P(rows, feats, h, t, s_pad, p, valid), atol=1e-6)


def test_predictor_without_grid_tokens(tiny_G: Generator) -> None:
    cfg = PredictorConfig.for_generator(tiny_G, d_model=16, n_heads=2, enc_layers=1, dec_layers=1, grid=0)
    P = LatentPredictor(cfg)
    out = P(*predictor_inputs(cfg, 2, 1, torch.Generator().manual_seed(1)))
    assert out.shape == (2, 6, 32) and torch.isfinite(out).all()


def test_regularizer_shapes_identity_and_zero_step(tiny_G: Generator) -> None:
    """R is the identity at init; regularize_step of a zero step is exact for any weights."""
    R = LatentRegularizer(RegularizerConfig(w_dim=32, n_rows=6, hidden=16, blocks=2))
    w = torch.randn(4, 6, 32)
    assert torch.allclose(R(w), w, atol=1e-6)
    torch.nn.init.normal_(R.head.weight, std=0.2)
    assert not torch.allclose(R(w), w, atol=1e-3)
    assert torch.equal(R.regularize_step(w, w, 0.7), w)
    step = w + 0.1 * torch.randn_like(w)
    assert torch.equal(R.regularize_step(w, step, 0.0), step)
    assert not torch.equal(R.regularize_step(w, step, 0.5), step)
    with pytest.raises(ValueError, match="rows"):
        R(torch.randn(4, 5, 32))
    with pytest.raises(ValueError, match="alpha"):
        RegularizerConfig(alpha=1.5)


def test_regularize_chain_also_takes_back_the_drift_since_the_start() -> None:
    """regularize_chain = regularize_step + drift * (c(prev) - c(start)), c(w) = R(w) - w: at the
    chain's first step (prev = start) or with drift 0 it is regularize_step."""
    torch.manual_seed(1)
    R = LatentRegularizer(RegularizerConfig(w_dim=32, n_rows=6, hidden=16, blocks=2))
    torch.nn.init.normal_(R.head.weight, std=0.2)
    start, prev = torch.randn(3, 6, 32), torch.randn(3, 6, 32)
    new = prev + 0.1 * torch.randn_like(prev)
    a, d = torch.tensor([0.6, 0.6, 0.0])[:, None, None], torch.tensor([0.1, 0.0, 0.5])[:, None, None]
    got = R.regularize_chain(start, prev, new, a, d)
    c = lambda w: R(w) - w  # noqa: E731
    want = new + a * (c(new) - c(prev)) + d * (c(prev) - c(start))
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(got[1], R.regularize_step(prev, new, 0.6)[1], atol=1e-5)
    first = R.regularize_chain(prev, prev, new, 0.6, 0.3)
    assert torch.allclose(first, R.regularize_step(prev, new, 0.6), atol=1e-5)


def test_training_learns_a_linear_drag_rule() -> None:
    """200 Adam steps on w_{t+1} = w_t + A (sum of sub-steps) bring the loss below 1/5 of its start."""
    shape = dict(w_dim=16, num_ws=4, n_rows=2, img_resolution=32, feature_blocks=(8,), feature_channels=4)
    cfg = PredictorConfig(**shape, d_model=32, n_heads=2, enc_layers=1, dec_layers=1, grid=0)
    torch.manual_seed(0)
    P = LatentPredictor(cfg)
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(2, cfg.n_rows * cfg.w_dim, generator=gen) * 0.5
    opt = torch.optim.Adam(P.parameters(), lr=3e-3)

    def batch(g: torch.Generator):
        b, k = 32, 2
        rows = torch.randn(b, cfg.n_rows, cfg.w_dim, generator=g)
        feats = [torch.randn(b, 4, 8, 8, generator=g)]
        h = torch.rand(b, k, 2, generator=g) * 31
        t = torch.rand(b, k, 2, generator=g) * 31
        s = torch.randn(b, k, 2, generator=g) * 2
        p = torch.rand(b, k, generator=g)
        target = rows + (s.sum(1) @ A).reshape(b, cfg.n_rows, cfg.w_dim)
        return (rows, feats, h, t, s, p), target

    val = batch(torch.Generator().manual_seed(123))
    with torch.no_grad():
        start = (P(*val[0]) - val[1]).square().mean().item()
    for _ in range(200):
        x, y = batch(gen)
        loss = (P(*x) - y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = (P(*val[0]) - val[1]).square().mean().item()
    assert end < 0.2 * start, (start, end)


def test_regularizer_learns_to_denoise(tiny_G: Generator) -> None:
    """After 150 steps of stage 1 on the tiny generator's mapping, R(perturbed) is closer to the
    clean latents than the perturbed latents are (held-out batch)."""
    tp = load_script("train_predictor")
    torch.manual_seed(0)
    R = LatentRegularizer(RegularizerConfig(w_dim=32, n_rows=6, hidden=64, blocks=2))
    mean, std = latent_stats(tiny_G, n=2048)
    R.w_avg.copy_(mean)
    R.w_std.copy_(std)
    opt = torch.optim.Adam(R.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        loss, _ = tp.denoise_loss(R, tiny_G, 64, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    g = torch.Generator().manual_seed(999)
    clean = tp.clean_rows(tiny_G, 256, 6, g)
    noisy = perturb_latents(clean, std, g)
    with torch.no_grad():
        after = ((R(noisy) - clean) / std).square().mean().item()
    before = ((noisy - clean) / std).square().mean().item()
    assert after < 0.8 * before, (before, after)


def test_motion_loss_is_one_for_no_change_and_zero_for_the_requested_shift() -> None:
    """The stage-2 motion term: 1 when nothing moves, 0 when the content moved exactly by the sub-step."""
    tp = load_script("train_predictor")
    gen = torch.Generator().manual_seed(0)
    f_t = torch.nn.functional.avg_pool2d(torch.randn(2, 4, 36, 36, generator=gen), 5, 1)  # [2, 4, 32, 32]
    handles = torch.tensor([[[10.0, 12.0], [20.0, 16.0]], [[15.0, 15.0], [3.0, 3.0]]])
    substep = torch.tensor([[[2.0, 0.0], [2.0, 0.0]], [[2.0, 0.0], [0.0, 0.0]]])
    valid = torch.tensor([[True, True], [True, False]])
    shifted = torch.roll(f_t, shifts=2, dims=3)  # content moved 2 px to the right
    assert tp.motion_loss(f_t, f_t, handles, substep, valid).item() == pytest.approx(1.0)
    assert tp.motion_loss(shifted, f_t, handles, substep, valid).item() < 1e-6


def test_template_term_asks_for_the_start_content_where_the_handle_was_asked_to_go() -> None:
    """The template form of the motion term compares with the drag's first features around the
    handle's start: 0 when the start content sits at h_t + s, 1 for the features before the
    prediction (which hold it at h_t), whatever moved in between."""
    tp = load_script("train_predictor")
    gen = torch.Generator().manual_seed(1)
    f_0 = torch.nn.functional.avg_pool2d(torch.randn(1, 4, 36, 36, generator=gen), 5, 1)  # [1, 4, 32, 32]
    h_start = torch.tensor([[[10.0, 12.0], [20.0, 16.0]]])
    handles = h_start + torch.tensor([3.0, 0.0])  # both handles 3 px right of where they began
    substep = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]])  # the first asked for 2 px more, the second to stay
    valid = torch.ones(1, 2, dtype=torch.bool)
    f_t = torch.roll(f_0, shifts=3, dims=3)  # the start content 3 px right: at h_t
    f_good = torch.cat([torch.roll(f_0, shifts=5, dims=3)[..., :20], f_t[..., 20:]], dim=3)
    kw = {"anchor_at": h_start, "baseline": f_t}
    assert tp.motion_loss(f_t, f_0, handles, substep, valid, **kw).item() == pytest.approx(1.0)
    assert tp.motion_loss(f_good, f_0, handles, substep, valid, **kw).item() < 1e-6
    # the plain motion term would compare with F_0 around h_t instead: content that is not the template
    assert tp.motion_loss(f_good, f_0, handles, substep, valid, baseline=f_t).item() > 0.1


def test_far_from_handles_masks_only_the_neighbourhood_of_valid_handles() -> None:
    """The locality term's mask: 0 within the radius of a valid handle, 1 elsewhere; padded handles
    (valid False) mask nothing."""
    tp = load_script("train_predictor")
    handles = torch.tensor([[[4.0, 4.0], [12.0, 8.0]], [[8.0, 8.0], [0.0, 0.0]]])
    valid = torch.tensor([[True, True], [True, False]])
    far = tp.far_from_handles(handles, valid, (16, 16), 2.0)
    assert far.shape == (2, 1, 16, 16)
    assert far[0, 0, 4, 4] == 0 and far[0, 0, 4, 6] == 0 and far[0, 0, 4, 7] == 1  # x = 6: 2 px away
    assert far[0, 0, 8, 12] == 0 and far[0, 0, 15, 15] == 1
    assert far[1, 0, 0, 0] == 1 and far[1, 0, 8, 8] == 0  # the padded handle at (0, 0) masks nothing
    assert int((far[1] == 0).sum()) == 13  # a disk of radius 2 px: 13 pixels


def test_stage2_locality_term_is_reported_and_weighted(tiny_G: Generator) -> None:
    """--local-weight adds a `local` loss (change away from the handles, relative to the teacher's);
    without it the term is not computed."""
    tp = load_script("train_predictor")
    bundle = small_predictor(tiny_G)
    P, R = bundle.predictor, bundle.regularizer
    torch.manual_seed(0)
    w_t = tiny_G.ws_from_seed(0).repeat(2, 1, 1)
    n = P.cfg.n_rows
    b = {
        "w_t": w_t,
        "w_next": w_t[:, :n] + 0.3 * torch.randn_like(w_t[:, :n]),
        "handles": torch.tensor([[[8.0, 8.0]], [[20.0, 20.0]]]),
        "targets": torch.tensor([[[10.0, 8.0]], [[20.0, 22.0]]]),
        "substep": torch.tensor([[[2.0, 0.0]], [[0.0, 2.0]]]),
        "progress": torch.zeros(2, 1),
        "valid": torch.ones(2, 1, dtype=torch.bool),
    }
    with torch.no_grad():
        weights = {"alpha": 0.5, "feat_weight": 0.5, "feat_batch": 2, "motion_weight": 0.5}
        without = tp.stage2_losses(P, R, tiny_G, b, **weights)
        with_local = tp.stage2_losses(P, R, tiny_G, b, **weights, local_weight=1.0)
    assert "local" not in without and "local" in with_local
    # the untrained predictor is the identity: nothing changes anywhere, so the term is 0
    assert with_local["local"].item() == pytest.approx(0.0, abs=1e-6)
    assert with_local["feature"].item() == pytest.approx(without["feature"].item())
    moving = small_predictor(tiny_G, moving=True)  # a predictor that changes the latent
    with torch.no_grad():
        changed = tp.stage2_losses(
            moving.predictor, moving.regularizer, tiny_G, b, **weights, local_weight=1.0
        )
    assert changed["local"].item() > 0
    b["w_start"], b["h_start"] = w_t, b["handles"]  # the drag's first step: template = motion term
    with torch.no_grad():
        t_off = tp.stage2_losses(moving.predictor, moving.regularizer, tiny_G, b, **weights)
        t_on = tp.stage2_losses(
            moving.predictor, moving.regularizer, tiny_G, b, **weights, template_weight=1.0
        )
    assert "template" not in t_off
    assert t_on["template"].item() == pytest.approx(t_on["motion"].item(), rel=1e-4)


# -- sessions ----------------------------------------------------------------------------------------


def test_step_result_and_interface(tiny_G: Generator) -> None:
    """One step: the frame of the pre-step latent, tracked handles, counters; the latent moves."""
    model = small_predictor(tiny_G, moving=True)
    s = PredictSession.from_seed(tiny_G, 0, [(10, 12)], [(18, 12)], model=model)
    assert isinstance(s, EditSession)
    assert s.options.substep == 2.0  # the bundle's recommended options
    w0 = s.latent()
    r = s.step()
    assert isinstance(r, StepResult)
    assert np.array_equal(r.frame, to_uint8(tiny_G.synthesis(w0)[0])[0])
    assert r.step == 1 and s.step_index == 1 and not r.done and r.reason is None
    assert r.targets == [(18.0, 12.0)] and len(r.handles) == 1 and r.seconds > 0
    w1 = s.latent()
    assert w1.shape == (1, 8, 32) and w1.device.type == "cpu"
    assert torch.equal(w1[:, 6:], w0[:, 6:]) and not torch.equal(w1[:, :6], w0[:, :6])
    assert np.array_equal(s.render(), to_uint8(tiny_G.synthesis(w1)[0])[0])


def test_identity_predictor_stops_at_max_steps(tiny_G: Generator) -> None:
    """An untrained predictor never moves: the session ends at its budget with the start latent."""
    model = small_predictor(tiny_G)
    opts = PredictOptions(max_steps=4, budget_rule="fixed")
    s = PredictSession.from_seed(tiny_G, 1, [(5, 5)], [(25, 25)], options=opts, model=model)
    w0 = s.latent()
    results = [s.step() for _ in range(4)]
    assert [r.done for r in results] == [False, False, False, True]
    assert results[-1].reason == "max_steps" and torch.equal(s.latent(), w0)
    again = s.step()
    assert again.step == 4 and again.done and again.seconds == 0.0


def test_budget_rules(tiny_G: Generator) -> None:
    """need = ceil(longest distance / substep) + the tracking step. "cover" lets a long drag run
    to its end, "fit" stops a short one after its planned sub-steps, "fixed" keeps max_steps;
    the rule is a live option and bad values are refused."""
    model = small_predictor(tiny_G)
    opts = PredictOptions(max_steps=4, substep=2.0, budget_rule="cover", stall_steps=0)
    h, t = [(5, 5), (20, 20)], [(25, 5), (21, 20)]
    s = PredictSession.from_seed(tiny_G, 1, h, t, options=opts, model=model)
    assert s.budget == 11  # 20 px / 2 px = 10 sub-steps + 1
    steps = 0
    while not s.done:
        steps = s.step().step
    assert steps == 11 and s.reason == "max_steps"
    s.set_points([(5, 5)], [(8, 5)])
    assert s.budget == 4  # a short drag keeps max_steps
    s.set_options(budget_rule="fit")
    assert s.budget == 3  # 3 px: two sub-steps + 1
    s.set_points([(5, 5)], [(6.5, 5)])
    assert s.budget == 2
    steps = [s.step() for _ in range(2)]
    assert [r.done for r in steps] == [False, True] and s.reason == "max_steps"
    s.set_points([(5, 5)], [(25, 5)])
    assert s.budget == 4  # fit never exceeds max_steps
    s.set_options(budget_rule="fixed")
    assert s.budget == 4
    with pytest.raises(ValueError, match="budget_rule"):
        PredictOptions(budget_rule="grow")


def test_the_predictor_files_budget_does_not_cap_a_drag(tiny_G: Generator) -> None:
    """A file made when a predict drag stopped after a fixed budget (max_steps 4, budget_rule cover)
    keeps its sub-step and regularizer strength, not its budget: a drag runs until the handles
    arrive, it stalls, a handle is lost or the caller's cap (200 unless given)."""
    model = small_predictor(tiny_G, substep=1.5, max_steps=4, budget_rule="cover", reg_alpha=0.3)
    o = PredictOptions.recommended(model)
    assert (o.substep, o.reg_alpha, o.max_steps, o.budget_rule) == (1.5, 0.3, 200, "fixed")
    assert PredictOptions.recommended(model, max_steps=7).max_steps == 7


def test_a_drag_that_comes_no_closer_ends_stalled(tiny_G: Generator) -> None:
    """An untrained predictor never moves a handle: the drag ends "stalled" once stall_steps steps
    after the first brought the mean distance no closer; new points restart the window; with
    the rule off the drag runs to max_steps."""
    model = small_predictor(tiny_G)
    s = PredictSession.from_seed(
        tiny_G, 1, [(5, 5)], [(25, 25)], options=PredictOptions(stall_steps=3), model=model
    )
    results = [s.step() for _ in range(4)]
    assert [r.done for r in results] == [False, False, False, True] and results[-1].reason == "stalled"
    s.set_points(s.handles, [(20, 25)])
    results = [s.step() for _ in range(4)]
    assert [r.done for r in results] == [False, False, False, True] and s.reason == "stalled"
    assert PredictOptions().stall_steps == 8 and PredictOptions().stall_px_for(64) == 0.5
    assert PredictOptions().stall_measure == "mean"
    off = PredictSession.from_seed(
        tiny_G, 1, [(5, 5)], [(25, 25)], options=PredictOptions(stall_steps=0, max_steps=12), model=model
    )
    while not off.done:
        r = off.step()
    assert r.reason == "max_steps" and r.step == 12


def test_a_handle_whose_feature_is_gone_ends_the_drag_as_lost(tiny_G: Generator) -> None:
    """Each step reports per handle its match (best-match distance / template spread) and whether
    it is lost. A handle whose search window no longer holds its feature (here: kept template,
    window moved far away, as when the feature is covered) is lost, and the drag ends with reason
    "lost", even with every handle within the stop distance; no update is made."""
    model = small_predictor(tiny_G)  # the identity: the image never changes
    ends = []
    for lost_ratio in (PredictOptions().lost_ratio, None):  # the rule on, then off
        opts = PredictOptions(stop_distance=5.0, lost_ratio=lost_ratio)
        h, t = [(8, 8), (24, 8)], [(8, 8.5), (24, 20)]
        s = PredictSession.from_seed(tiny_G, 0, h, t, options=opts, model=model)
        r = s.step()
        assert r.match == (0.0, 0.0) and r.lost == (False, False) and not r.done
        w = s.latent()
        s.set_points([s.handles[0], (24, 20)], s.targets, keep=[0, 1])  # handle 1 jumps to its target
        r = s.step()
        assert r.match[0] == 0.0 and r.match[1] > PredictOptions().lost_ratio
        assert torch.equal(s.latent(), w)
        ends.append((r.reason, r.lost))
    assert ends == [("lost", (False, True)), ("reached", (False, False))]


def test_a_lost_handle_is_left_out_and_the_others_go_on(tiny_G: Generator) -> None:
    """With several handles a lost one does not end the drag: it keeps its place and its flag,
    the predictor is given it as padding (not valid, no sub-step), the other handle goes on, and
    the drag ends by the other rules (here stalled: the identity predictor never moves anything),
    or as "lost" once the others are there, never as "reached"."""
    model = small_predictor(tiny_G)  # the identity
    seen = []
    forward = model.predictor.forward

    def recording(*args):
        seen.append((args[4].clone(), args[6].clone()))  # substep [B, K, 2], valid [B, K]
        return forward(*args)

    model.predictor.forward = recording
    h, t = [(8, 8), (24, 8)], [(8, 20), (24, 20)]
    s = PredictSession.from_seed(tiny_G, 0, h, t, options=PredictOptions(stall_steps=3), model=model)
    s.step()
    assert seen[-1][1].tolist() == [[True, True]]
    s.set_points([s.handles[0], (24, 20)], s.targets, keep=[0, 1])  # handle 1 jumps off its feature
    r = s.step()
    assert r.lost == (False, True) and not r.done and r.handles[1] == (24.0, 20.0)
    substep, valid = seen[-1]
    assert (
        valid.tolist() == [[True, False]] and substep[0, 1].abs().sum() == 0 and substep[0, 0].abs().sum() > 0
    )
    while not r.done:
        r = s.step()
        assert r.lost == (False, True) and r.handles[1] == (24.0, 20.0)
    assert r.reason == "stalled"
    s.set_points(s.handles, [s.handles[0], (24, 24)], keep=[0, 1])  # handle 0's target onto it
    r = s.step()
    assert r.done and r.reason == "lost" and r.lost == (False, True)


def test_reached_at_once_does_not_update(tiny_G: Generator) -> None:
    model = small_predictor(tiny_G, moving=True)
    s = PredictSession.from_seed(tiny_G, 0, [(10, 10), (20, 5)], [(10.5, 10), (20, 5)], model=model)
    w0 = s.latent()
    r = s.step()
    assert r.done and r.reason == "reached" and torch.equal(s.latent(), w0)


def test_single_shot_finishes_after_one_prediction(tiny_G: Generator) -> None:
    """Single-shot: one prediction over the whole distance, then one tracking step."""
    model = small_predictor(tiny_G, moving=True)
    opts = PredictOptions(single_shot=True, lost_ratio=None)  # a random predictor may lose the handle
    s = PredictSession.from_seed(tiny_G, 2, [(8, 8)], [(24, 20)], options=opts, model=model)
    assert s._substep().norm().item() == pytest.approx(20.0)
    r1, r2 = s.step(), s.step()
    assert not r1.done and r2.done and r2.reason in ("max_steps", "reached") and r2.step == 2
    assert np.array_equal(to_uint8(tiny_G.synthesis(s.latent())[0])[0], r2.frame)


def test_substep_is_clipped_and_zero_within_stop_distance(tiny_G: Generator) -> None:
    model = small_predictor(tiny_G)
    handles, targets = [(4, 4), (10, 10), (20, 20)], [(4, 14), (11, 10), (21.5, 20)]
    s = PredictSession.from_seed(
        tiny_G, 0, handles, targets, options=PredictOptions(substep=3.0), model=model
    )
    sub = s._substep()
    assert torch.allclose(sub[0], torch.tensor([0.0, 3.0]))
    assert torch.equal(sub[1], torch.zeros(2))  # within the 1 px stop distance
    assert torch.allclose(sub[2], torch.tensor([1.5, 0.0]))  # the last bit is shorter than a sub-step


def test_handles_between_1_px_and_the_stop_distance_keep_moving(tiny_G: Generator) -> None:
    """Six handles: the stop distance is 2 px, but as in DragGAN's motion supervision a handle
    1.5 px away is still asked to move while the drag goes on; one 0.5 px away is not."""
    model = small_predictor(tiny_G, moving=True)
    handles = [(4 + 4 * i, 10) for i in range(6)]
    targets = [(x + 0.5, y) for x, y in handles[:5]] + [(handles[5][0] + 1.5, 10)]
    s = PredictSession.from_seed(tiny_G, 0, handles, targets, model=model)
    assert s.stop_distance == 2.0
    sub = s._substep()
    assert torch.equal(sub[:5], torch.zeros(5, 2))
    assert torch.allclose(sub[5], torch.tensor([1.5, 0.0]))
    s.set_points(handles + [(10, 20)], targets + [(10, 26)])  # a seventh handle 6 px away
    sub = s._substep()
    assert torch.equal(sub[:5], torch.zeros(5, 2))
    assert torch.allclose(sub[5], torch.tensor([1.5, 0.0]))
    assert torch.allclose(sub[6], torch.tensor([0.0, 2.0]))
    assert not s.step().done


def test_batch_matches_stepping_alone(tiny_G: Generator) -> None:
    """predict_step_batch gives each session what stepping it alone gives (float noise aside)."""
    model = small_predictor(tiny_G, moving=True)

    def make() -> list[PredictSession]:
        return [
            PredictSession.from_seed(tiny_G, 0, [(10, 12)], [(18, 12)], model=model),
            PredictSession.from_seed(
                tiny_G, 1, [(20, 20), (5, 5), (9, 9)], [(20, 10), (9, 5), (9, 12)], model=model
            ),
            PredictSession.from_seed(tiny_G, 2, [(3, 28)], [(3.5, 28)], model=model),  # done at once
            PredictSession.from_seed(
                tiny_G,
                3,
                [(8, 8)],
                [(20, 20)],
                options=PredictOptions(max_steps=3, reg_alpha=0.0, budget_rule="fixed", lost_ratio=None),
                model=model,
            ),
        ]

    batched, alone = make(), make()
    for _ in range(5):
        rb = predict_step_batch(batched)
        ra = [s.step() for s in alone]
        for x, y in zip(rb, ra, strict=True):
            assert (x.done, x.reason, x.step) == (y.done, y.reason, y.step)
            assert np.allclose(x.handles, y.handles)
            assert np.abs(x.frame.astype(int) - y.frame).max() <= 1
    for x, y in zip(batched, alone, strict=True):
        assert torch.allclose(x.latent(), y.latent(), atol=1e-4)
    assert batched[2].reason == "reached" and batched[3].reason == "max_steps"
    with pytest.raises(ValueError, match="twice"):
        predict_step_batch([batched[0], batched[0]])


def test_points_and_options_change_mid_drag(tiny_G: Generator) -> None:
    model = small_predictor(tiny_G, moving=True)
    opts = PredictOptions(max_steps=2, budget_rule="fixed", lost_ratio=None)
    s = PredictSession.from_seed(
        tiny_G, 0, [(10, 12), (20, 20)], [(16, 12), (20, 26)], options=opts, model=model
    )
    s.step()
    s.step()
    assert s.done and s.reason == "max_steps"
    templates = s._templates.clone()
    s.set_points(s.handles, [(14, 14), (22, 26)])
    assert not s.done and torch.equal(s._templates, templates)
    assert s.step().step == 3
    s.set_options(substep=4.0, max_steps=10, reg_alpha=0.0)
    assert s.options.substep == 4.0 and not s.done
    with pytest.raises(ValueError, match="cannot change"):
        s.set_options(dtype="bfloat16")
    with pytest.raises(ValueError, match="unknown"):
        s.set_options(speed=3)
    with pytest.raises(ValueError, match="substep"):
        s.set_options(substep=-1)


@pytest.mark.parametrize(
    "handles,targets,match",
    [
        ([], [], "empty"),
        ([(1, 1), (2, 2)], [(3, 3)], "pair up"),
        ([(32, 1)], [(3, 3)], r"handles\[0\].*outside the 32x32 image"),
        ([(1, 1)], [(3, -0.5)], r"targets\[0\].*outside"),
        ([(1, 1), (float("nan"), 2)], [(3, 3), (4, 4)], r"handles\[1\].*not finite"),
        ([(1, 2, 3)], [(3, 3)], "pairs"),
    ],
)
def test_bad_points_raise_like_drag_sessions(tiny_G: Generator, handles, targets, match: str) -> None:
    model = small_predictor(tiny_G)
    ws = tiny_G.ws_from_seed(0)
    with pytest.raises(ValueError, match=match):
        PredictSession(tiny_G, ws, handles, targets, model=model)
    s = PredictSession(tiny_G, ws, [(1, 1)], [(2, 2)], model=model)
    with pytest.raises(ValueError, match=match):
        s.set_points(handles, targets)


def test_bad_latents_masks_and_options_raise(tiny_G: Generator) -> None:
    model = small_predictor(tiny_G)
    with pytest.raises(ValueError, match="NaN"):
        PredictSession(tiny_G, torch.full((1, 8, 32), float("nan")), [(1, 1)], [(2, 2)], model=model)
    with pytest.raises(ValueError, match="shape"):
        PredictSession(tiny_G, torch.zeros(1, 32), [(1, 1)], [(2, 2)], model=model)
    with pytest.raises(ValueError, match="bool"):
        PredictSession.from_seed(tiny_G, 0, [(1, 1)], [(2, 2)], mask=np.ones((32, 32), np.uint8), model=model)
    for bad in (
        {"substep": 0},
        {"max_steps": 0},
        {"reg_alpha": 2.0},
        {"noise_mode": "random"},
        {"mask_step": 2},
        {"reg_drift": -0.1},
        {"stall_steps": -1},
        {"stall_px": float("nan")},
        {"lost_ratio": 0},
    ):
        with pytest.raises(ValueError):
            PredictOptions(**bad)
    other = Generator(tiny_config(16))
    with pytest.raises(ValueError, match="built for"):
        PredictSession.from_seed(other, 0, [(1, 1)], [(2, 2)], model=model)


def test_mask_keeps_the_fixed_region(tiny_G: Generator) -> None:
    """With a flexible area on the left, features on the fixed right side change at most 3/4 as much
    as without a mask (random predictor, 5 sub-steps, two mask-correction steps each)."""
    from tests.engine.test_drag import features

    model = small_predictor(tiny_G)
    torch.nn.init.normal_(model.predictor.head.weight, std=0.02)
    flexible = np.zeros((32, 32), dtype=bool)
    flexible[:, :20] = True
    for seed in (0, 1):
        change = {}
        for name, mask in (("none", None), ("mask", flexible)):
            opts = PredictOptions(max_steps=6, mask_step=0.5, mask_iters=2, lost_ratio=None)
            s = PredictSession.from_seed(
                tiny_G, seed, [(8, 12)], [(16, 12)], mask=mask, options=opts, model=model
            )
            w0 = s.latent()
            for _ in range(5):
                s.step()
            d = (features(tiny_G, s.latent()) - features(tiny_G, w0)).abs().mean(dim=1)[0]
            change[name] = d[:, 20:].mean().item()
        assert change["mask"] < 0.75 * change["none"], (seed, change)


# -- files -------------------------------------------------------------------------------------------


def test_save_load_round_trip_and_refusals(tmp_path: Path, tiny_G: Generator) -> None:
    model = small_predictor(tiny_G, moving=True)
    path = save_predictor(model, tmp_path / "p.safetensors")
    got = load_predictor(path, G=tiny_G)
    assert got.predictor.cfg == model.predictor.cfg and got.regularizer.cfg == model.regularizer.cfg
    assert got.identity == GeneratorIdentity.of(tiny_G) and got.defaults == {"substep": 2.0}
    x = predictor_inputs(model.predictor.cfg, 2, 3, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(got.predictor(*x), model.predictor(*x), atol=2e-2, rtol=1e-2)  # fp16 weights
    exact = load_predictor(save_predictor(model, tmp_path / "p32.safetensors", half=False), G=tiny_G)
    with torch.no_grad():
        assert torch.equal(exact.predictor(*x), model.predictor(*x))

    torch.manual_seed(5)
    other_weights = Generator(tiny_config()).eval()
    with pytest.raises(PredictorMismatchError, match="other weights"):
        load_predictor(path, G=other_weights)
    assert load_predictor(path, G=other_weights, allow_other_weights=True).identity == model.identity
    with pytest.raises(PredictorMismatchError, match="architecture"):
        load_predictor(path, G=Generator(tiny_config(16)))
    with pytest.raises(PredictorNotFoundError, match="not found"):
        load_predictor(tmp_path / "missing.safetensors")
    gen_file = save_generator(tiny_G, tmp_path / "g.safetensors")
    with pytest.raises(PredictorError, match="not a livedrag predictor"):
        load_predictor(gen_file)


def test_cli_and_room_predict_drags_use_the_same_rules(
    tiny_G: Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`livedrag drag --method predict` and a room's predict mode build sessions with the same
    options (the predictor's sub-step and regularizer, the stop rules), the step cap aside: the CLI's
    --steps (200 by default), the room's max_steps (which the room enforces)."""
    import argparse

    import server.engine.predict_session as ps
    from server.cli.drag import make_session
    from server.core.state import Params
    from server.worker.modes import SessionSpec, predict_mode

    model = small_predictor(tiny_G, moving=True, substep=1.5, max_steps=4, budget_rule="cover")
    made = ps.make_predict_session
    monkeypatch.setattr(ps, "make_predict_session", lambda *a, path, **kw: made(*a, model=model, **kw))
    ws = tiny_G.ws_from_seed(0)
    h, t = [(8.0, 8.0)], [(14.0, 10.0)]
    cli = make_session("predict", tiny_G, ws, h, t, None, argparse.Namespace(steps=None, stop_distance=None))
    spec = SessionSpec("r", tiny_G, ws, h, t, None, Params(mode="predict", max_steps=300))
    room = predict_mode(model).create(spec)
    assert cli.options.max_steps == 200 and room.options.max_steps >= 300  # the room stops at its own cap
    assert dataclasses.replace(cli.options, max_steps=1) == dataclasses.replace(room.options, max_steps=1)
    assert (cli.options.substep, cli.options.budget_rule, cli.options.stall_steps) == (1.5, "fixed", 8)


def test_cli_drag_with_predict_method(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`livedrag drag --method predict` uses the default predictor file."""
    import server.engine.predictor_io as pio
    from server.cli import main

    torch.manual_seed(0)
    G = Generator(tiny_config()).eval().requires_grad_(False)
    ckpt = save_generator(G, tmp_path / "tiny.safetensors")
    G = __import__("server.engine.checkpoint", fromlist=["load_generator"]).load_generator(ckpt)
    pred = save_predictor(small_predictor(G, moving=True), tmp_path / "pred.safetensors")
    monkeypatch.setattr(pio, "default_predictor_path", lambda: pred)
    out = tmp_path / "r.png"
    args = ["drag", "--seed", "0", "--point", "8,8:14,10", "--method", "predict", "--steps", "5"]
    assert main([*args, "--checkpoint", str(ckpt), "--out", str(out), "--device", "cpu"]) == 0
    assert out.is_file()


# -- scripts -----------------------------------------------------------------------------------------


def tiny_checkpoint(tmp_path: Path) -> str:
    """A tiny random generator saved for the training scripts (seeded)."""
    torch.manual_seed(0)
    G = Generator(tiny_config()).eval().requires_grad_(False)
    return str(save_generator(G, tmp_path / "g.safetensors"))


def shard_args(ckpt: str, traj: Path, max_steps: int) -> list[str]:
    """make_trajectories arguments for a few tiny shards of 3 drags."""
    return [
        "--checkpoint",
        ckpt,
        "--out",
        str(traj),
        "--per-shard",
        "3",
        "--batch",
        "3",
        "--max-steps",
        str(max_steps),
    ]


def test_trajectories_training_and_export_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """make_trajectories (resumable) -> stage 1 -> stage 2 (resumed; a phase stopped with --stop-at)
    -> export -> a working PredictSession."""
    ckpt = tiny_checkpoint(tmp_path)
    mt, tp = load_script("make_trajectories"), load_script("train_predictor")
    traj = tmp_path / "traj"
    common = shard_args(ckpt, traj, max_steps=6)
    assert mt.main([*common, "--shards", "1", "--no-detector", "--no-progress"]) == 0
    first = (traj / "shard_00000.safetensors").stat().st_mtime_ns
    assert mt.main([*common, "--shards", "2", "--no-detector", "--no-progress"]) == 0
    assert (traj / "shard_00000.safetensors").stat().st_mtime_ns == first  # finished shards are skipped
    from server.engine.checkpoint import load_generator

    G = load_generator(ckpt)
    data = mt.read_shards(sorted(traj.glob("shard_*.safetensors")), GeneratorIdentity.of(G))
    assert len(data["n_points"]) == 6 and data["dw"].shape[1:] == (6, 32)
    assert int(data["offsets"][-1]) == len(data["dw"]) == len(data["handles"])

    run = tmp_path / "run"
    base = [
        "--checkpoint",
        ckpt,
        "--out",
        str(run),
        "--no-progress",
        "--eval-every",
        "5",
        "--ckpt-every",
        "5",
    ]
    assert tp.main([*base, "--stage", "1", "--iters", "10", "--batch", "16", "--reg-hidden", "16"]) == 0
    small = ["--d-model", "16", "--heads", "2", "--enc-layers", "1", "--dec-layers", "1", "--grid", "2"]
    stage2 = [*base, "--stage", "2", "--traj", str(traj), "--batch", "4", "--feat-batch", "2", *small]
    assert tp.main([*stage2, "--iters", "4"]) == 0
    capsys.readouterr()
    assert tp.main([*stage2, "--iters", "6", "--stop-at", "5"]) == 0  # resumes at 4, stops at 5
    out_text = capsys.readouterr().out
    assert "stopped at iteration 5 (--stop-at)" in out_text and '"iter": 5' in out_text
    assert tp.main([*stage2, "--iters", "6"]) == 0  # resumes at 5
    out = tmp_path / "pred.safetensors"
    export = ["--checkpoint", ckpt, "--out", str(run), "--export", str(out)]
    with pytest.raises(SystemExit, match="budget_rule"):
        tp.main([*export, "--default", "budget_rule=grow"])
    assert tp.main([*export, "--default", "budget_rule=fit", "--default", "max_steps=3"]) == 0
    model = load_predictor(out, G=G)
    assert model.training["stage2_iters"] == 6 and model.defaults["substep"] == 1.0
    assert model.defaults["budget_rule"] == "fit"  # stored, but a drag runs to its end now
    assert PredictOptions.recommended(model).budget_rule == "fixed"
    s = PredictSession.from_seed(G, 0, [(10, 10)], [(16, 10)], model=model)
    assert s.step().step == 1


# -- the shipped predictor ---------------------------------------------------------------------------


@pytest.mark.skipif(not shipped_predictor_fits(), reason=NO_SHIPPED_PREDICTOR)
def test_shipped_predictor_moves_handles_toward_targets() -> None:
    """The shipped predictor loads for the embedded generator, and a short drag brings handles closer."""
    from server.engine.checkpoint import load_generator

    G = load_generator()
    model = load_predictor(G=G)
    res = G.img_resolution
    closer = 0
    for seed in (0, 1, 2):
        h, t = (0.4 * res, 0.5 * res), (0.4 * res + res / 10, 0.5 * res)
        opts = PredictOptions.recommended(model)  # as shipped: its sub-step, the product's stop rules
        s = PredictSession.from_seed(G, seed, [h], [t], options=opts, model=model)
        while not s.done:
            r = s.step()
        d0 = np.hypot(t[0] - h[0], t[1] - h[1])
        d1 = np.hypot(t[0] - r.handles[0][0], t[1] - r.handles[0][1])
        closer += int(d1 <= d0 - 1.5)  # >= 1.5 px closer
    assert closer >= 2


def shipped_nose_drag(seed: int, **changes) -> tuple[PredictSession, list, list]:
    """A predict session on the shipped model moving the nose tip (found by the landmark detector)
    6 px left at 64 px, 6 * res / 64 px at other sizes (three sub-steps of the trained res / 32),
    with the options the room and the CLI use (``changes`` on top)."""
    from server.engine.checkpoint import load_generator
    from server.synthfaces.detector import load_detector
    from server.synthfaces.landmarks import LANDMARK_NAMES

    G = load_generator()
    model = load_predictor(G=G)
    ws = G.ws_from_seed(seed)
    with torch.no_grad():
        img = to_uint8(G.synthesis(ws)[0])
    x, y = (load_detector().detect(img)[0, LANDMARK_NAMES.index("nose_tip")] - 0.5).tolist()
    h, t = [(x, y)], [(x - 6 * G.img_resolution / 64, y)]
    opts = PredictOptions.recommended(model, **changes)
    return PredictSession(G, ws, h, t, options=opts, model=model), h, t


@pytest.mark.skipif(not shipped_predictor_fits(), reason=NO_SHIPPED_PREDICTOR)
@pytest.mark.parametrize("seed", [0, 4, 7])
def test_shipped_predict_drag_arrives_for_a_6_px_move(seed: int) -> None:
    """One press of Start finishes a short drag: a predict drag of the nose tip 6 px (at 64 px) on
    the shipped model runs one sub-step per step until the handle is within the stop distance and
    ends with reason reached (on these seeds), long before the cap."""
    s, _, _ = shipped_nose_drag(seed)
    assert s.options.max_steps == 200 and s.options.budget_rule == "fixed"
    while not s.done:
        r = s.step()
    assert r.reason == "reached" and r.step <= 30, (r.reason, r.step)
    assert np.hypot(r.handles[0][0] - r.targets[0][0], r.handles[0][1] - r.targets[0][1]) <= s.stop_distance


@pytest.mark.skipif(not shipped_predictor_fits(), reason=NO_SHIPPED_PREDICTOR)
def test_shipped_predict_drag_honours_max_steps_and_reports_a_lost_handle() -> None:
    """The caller's cap ends a drag that has not arrived (reason max_steps, at that step); a handle
    whose window is moved off its feature (kept template, window in the image's corner) is lost."""
    s, _, _ = shipped_nose_drag(1, max_steps=3)
    results = []
    while not s.done:
        results.append(s.step())
    assert [r.step for r in results] == [1, 2, 3] and results[-1].reason == "max_steps"
    s, _, t = shipped_nose_drag(2)
    s.step()
    corner = 2 * s.size[0] / 64
    s.set_points([(corner, corner)], t, keep=[0])
    r = s.step()
    assert r.reason == "lost" and r.lost == (True,) and r.match[0] > s.options.lost_ratio


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_predict_sessions_run_on_cuda_as_on_the_cpu(tiny_G: Generator) -> None:
    """The same predicted sub-steps on CUDA as on the CPU (float noise aside), one session alone
    and two in one batch; latents come back on the CPU."""
    import copy

    G_gpu = copy.deepcopy(tiny_G).cuda()
    m_cpu = small_predictor(tiny_G, moving=True)
    m_gpu = copy.deepcopy(m_cpu).to("cuda")
    opts = PredictOptions(max_steps=3, budget_rule="fixed")
    points = [([(10, 12)], [(18, 12)]), ([(20, 20), (5, 5)], [(20, 12), (9, 5)])]

    def latents(G: Generator, model, batch: bool) -> list[torch.Tensor]:
        sessions = [
            PredictSession.from_seed(G, i, h, t, options=opts, model=model) for i, (h, t) in enumerate(points)
        ]
        for _ in range(2):
            if batch:
                predict_step_batch(sessions)
            else:
                for s in sessions:
                    s.step()
        return [s.latent() for s in sessions]

    ref = latents(tiny_G, m_cpu, batch=False)
    for batch in (False, True):
        for w_gpu, w_cpu in zip(latents(G_gpu, m_gpu, batch), ref, strict=True):
            assert w_gpu.device.type == "cpu"
            torch.testing.assert_close(w_gpu, w_cpu, atol=5e-3, rtol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_trajectories_and_training_on_cuda(tmp_path: Path) -> None:
    """The training pipeline with --device cuda: shards, both stages, an export that loads and
    steps on the CPU."""
    device = "cuda"
    ckpt = tiny_checkpoint(tmp_path)
    mt, tp = load_script("make_trajectories"), load_script("train_predictor")
    traj, run, out = tmp_path / "traj", tmp_path / "run", tmp_path / "pred.safetensors"
    shards = shard_args(ckpt, traj, max_steps=4)
    assert mt.main([*shards, "--shards", "1", "--no-detector", "--no-progress", "--device", device]) == 0
    base = ["--checkpoint", ckpt, "--out", str(run), "--no-progress", "--device", device]
    assert tp.main([*base, "--stage", "1", "--iters", "4", "--batch", "16", "--reg-hidden", "16"]) == 0
    small = ["--d-model", "16", "--heads", "2", "--enc-layers", "1", "--dec-layers", "1", "--grid", "2"]
    stage2 = ["--stage", "2", "--traj", str(traj), "--batch", "4", "--feat-batch", "2", "--iters", "3"]
    assert tp.main([*base, *stage2, *small]) == 0
    assert tp.main(["--checkpoint", ckpt, "--out", str(run), "--export", str(out)]) == 0
    from server.engine.checkpoint import load_generator

    G = load_generator(ckpt)
    s = PredictSession.from_seed(G, 0, [(10, 10)], [(16, 10)], model=load_predictor(out, G=G))
    assert s.step().step == 1
