"""On-policy rollouts (server/training/predictor_rollout.py) and the soft point-tracking term
(server/training/predictor_losses.track_loss)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server.engine.generator import Generator
from server.engine.predict_options import PredictOptions
from server.engine.predict_session import PredictSession
from server.engine.tracking import track_points
from server.training.predictor_losses import stage2_losses, track_loss
from server.training.predictor_rollout import rollout_batch, track_batch
from tests.conftest import small_predictor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def smooth_features(seed: int, size: int = 32, channels: int = 8) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.nn.functional.avg_pool2d(torch.randn(1, channels, size + 4, size + 4, generator=gen), 5, 1)


def test_track_term_is_one_before_the_move_and_low_when_the_template_is_where_asked() -> None:
    """1 for the features before the prediction (the template still at the handle's old place);
    low when the start content moved by the request; higher again when the template is found at
    the new place but also still at the old one (what the tracker's argmin may pick)."""
    f_0 = smooth_features(0)
    h_start = torch.tensor([[[10.0, 12.0], [20.0, 16.0]]])
    handles = h_start.clone()
    substep = torch.tensor([[[3.0, 0.0], [0.0, 3.0]]])
    valid = torch.ones(1, 2, dtype=torch.bool)
    moved = f_0.clone()
    moved[..., :, 8:16] = torch.roll(f_0, shifts=3, dims=3)[..., :, 8:16]  # handle 0's content 3 px right
    moved[..., 14:24, 16:24] = torch.roll(f_0, shifts=3, dims=2)[..., 14:24, 16:24]  # handle 1's 3 px down
    args = (f_0, handles, substep, valid, h_start)
    assert track_loss(f_0, *args, baseline=f_0).item() == pytest.approx(1.0)
    good = track_loss(moved, *args, baseline=f_0).item()
    assert good < 0.3
    both = moved.clone()  # handle 0's template also left where it was
    both[..., 11:14, 9:12] = f_0[..., 11:14, 9:12]
    assert track_loss(both, *args, baseline=f_0).item() > good
    # a padded handle (valid False) counts for nothing
    pad = torch.tensor([[True, False]])
    one = track_loss(moved, f_0, handles, substep, pad, h_start, baseline=f_0)
    assert torch.isfinite(one) and one.item() < 0.3


def test_track_term_has_a_gradient_toward_the_move() -> None:
    f_0 = smooth_features(1)
    h = torch.tensor([[[15.0, 15.0]]])
    s = torch.tensor([[[2.0, 0.0]]])
    f = f_0.clone().requires_grad_(True)
    loss = track_loss(f, f_0, h, s, torch.ones(1, 1, dtype=torch.bool), h, baseline=f_0)
    loss.backward()
    assert f.grad is not None and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
    inside = f.grad[..., 10:21, 10:23].abs().sum()  # the search window (plus the move) only
    assert inside == pytest.approx(f.grad.abs().sum().item())


def test_batched_tracking_matches_point_tracking() -> None:
    f = torch.cat([smooth_features(2), smooth_features(3)])
    handles = torch.tensor([[[5.0, 6.0], [0.0, 31.0]], [[16.0, 16.0], [30.0, 2.0]]])
    templates = torch.randn(2, 8, 2, generator=torch.Generator().manual_seed(4)) * 0.1
    got = track_batch(f, templates, handles, 3)
    for i in range(2):
        want = track_points(f[i : i + 1], templates[i].t(), handles[i], 3)
        assert torch.equal(got[i], want)


class FixedSteps:
    """An rng whose ``integers`` returns fixed rollout lengths."""

    def __init__(self, steps: list[int]) -> None:
        self.steps = np.asarray(steps)

    def integers(self, low: int, high: int, size: int) -> np.ndarray:
        assert np.all((self.steps >= low) & (self.steps < high)) and size == len(self.steps)
        return self.steps


@pytest.mark.parametrize("template_input", [False, True])
def test_a_rollout_is_what_a_predict_session_does(tiny_G: Generator, template_input: bool) -> None:
    """Each rolled-out drag ends where a PredictSession with the same settings is after that many
    steps: its latent, and its handles as tracked in that latent's image; the next request is
    min(substep, remaining) toward the target, none within 1 px. A predictor that reads the
    tracking templates gets the session's own."""
    model = small_predictor(tiny_G, moving=True, template_input=template_input)
    P, R = model.predictor, model.regularizer
    seeds = [0, 1]
    handles = torch.tensor([[[10.0, 12.0], [20.0, 20.0]], [[8.0, 8.0], [0.0, 0.0]]])
    targets = torch.tensor([[[18.0, 12.0], [20.5, 20.0]], [[20.0, 20.0], [0.0, 0.0]]])
    valid = torch.tensor([[True, True], [True, False]])
    with torch.no_grad():
        w = torch.cat([tiny_G.ws_from_seed(s) for s in seeds])
    b = {"w_start": w, "h_start": handles, "targets": targets, "valid": valid}
    steps = [3, 1]
    rb = rollout_batch(P, R, tiny_G, b, 2, 4, 2.0, 0.5, 0.1, FixedSteps(steps))
    opts = PredictOptions(substep=2.0, reg_alpha=0.5, reg_drift=0.1, stall_steps=0, lost_ratio=None)
    for i, (n, k) in enumerate(zip(steps, (2, 1), strict=True)):
        s = PredictSession(tiny_G, w[i : i + 1], handles[i, :k], targets[i, :k], options=opts, model=model)
        for _ in range(n):
            s.step()
        assert torch.allclose(rb["w_t"][i : i + 1], s.latent(), atol=1e-5)
        s.step()  # tracks in the image of the n-th prediction
        assert torch.equal(rb["handles"][i, :k], torch.tensor(s.handles, dtype=torch.float32))
        assert torch.allclose(rb["templates"][i, :k], s.templates()[0], atol=1e-6)
    rem = rb["targets"] - rb["handles"]
    dist = rem.norm(dim=-1)
    expect = rem * (2.0 / dist.clamp(min=1e-6)).clamp(max=1.0)[..., None] * ((dist > 1.0) & valid)[..., None]
    assert torch.allclose(rb["substep"], expect)
    assert "w_next" not in rb and P.training is False


def test_stage2_losses_on_a_rollout_batch_take_only_the_label_free_terms(tiny_G: Generator) -> None:
    model = small_predictor(tiny_G, moving=True)
    P, R = model.predictor.requires_grad_(True), model.regularizer.requires_grad_(True)
    with torch.no_grad():
        w = torch.cat([tiny_G.ws_from_seed(s) for s in (0, 1)])
    b = {
        "w_start": w,
        "h_start": torch.tensor([[[10.0, 12.0]], [[8.0, 8.0]]]),
        "targets": torch.tensor([[[18.0, 12.0]], [[20.0, 20.0]]]),
        "valid": torch.ones(2, 1, dtype=torch.bool),
    }
    rb = rollout_batch(P, R, tiny_G, b, 2, 3, 2.0, 0.5, 0.1, np.random.default_rng(0))
    weights = {"motion_weight": 0.5, "local_weight": 1.0, "template_weight": 1.0, "track_weight": 1.0}
    losses = stage2_losses(P, R, tiny_G, rb, 0.5, 0.5, 2, **weights)
    assert set(losses) == {"motion", "template", "track"}
    assert all(torch.isfinite(v) and v.requires_grad for v in losses.values())
