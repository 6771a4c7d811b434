"""Projection sessions: improvement, step cap, convergence, batching, weights and pivotal tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server.engine.checkpoint import load_generator
from server.engine.generator import to_uint8
from server.engine.project import ProjectOptions, ProjectSession, project_step_batch


@pytest.fixture(scope="module")
def G():
    return load_generator().eval().requires_grad_(False)


def _image(G, seed: int, psi: float = 0.7) -> np.ndarray:
    with torch.no_grad():
        return to_uint8(G.synthesis(G.ws_from_seed(seed, psi))[0])[0]


def test_shipped_model_improves_and_stops_at_the_cap(G):
    """From w_avg, eight steps raise PSNR by over 2 dB; the session is done at the cap."""
    s = ProjectSession(G, _image(G, 10**7 + 3), None, ProjectOptions(max_steps=8, min_steps=8))
    before = s.psnr()
    results = [s.step() for _ in range(8)]
    assert s.done and s.reason == "max_steps" and s.step_index == 8
    assert results[-1].done and results[-1].reason == "max_steps" and not results[0].done
    assert s.psnr() > before + 2.0
    assert np.array_equal(results[-1].frame, s.render())
    assert s.step() is results[-1]  # a finished session returns its last result
    assert s.latent().shape == (1, G.num_ws, G.w_dim) and s.latent().device.type == "cpu"


def test_converges_on_its_own_image(tiny_G):
    """A session whose target is its start image stops early as converged."""
    w = tiny_G.ws_from_seed(1)
    target = to_uint8(tiny_G.synthesis(w)[0])[0]
    opts = ProjectOptions(max_steps=50, min_steps=3, converge_window=2, perceptual_weight=0.0)
    s = ProjectSession(tiny_G, target, w, opts)
    while not s.done:
        s.step()
    assert s.reason == "converged" and s.step_index < 50


def test_batch_equals_single_steps(tiny_G):
    """project_step_batch gives the same latents as stepping each session alone."""
    targets = [_image(tiny_G, 5), _image(tiny_G, 6)]
    opts = ProjectOptions(max_steps=4, min_steps=4)
    single = [ProjectSession(tiny_G, t, None, opts) for t in targets]
    batch = [ProjectSession(tiny_G, t, None, opts) for t in targets]
    for _ in range(3):
        for s in single:
            s.step()
        res = project_step_batch(batch)
        assert [r.step for r in res] == [s.step_index for s in single]
    for a, b in zip(single, batch, strict=True):
        torch.testing.assert_close(a.latent(), b.latent(), atol=1e-5, rtol=1e-4)


def test_weight_validation_and_effect(tiny_G):
    """Bad weights are refused; a zero weight over half the image makes the pixel loss ignore that half."""
    target = _image(tiny_G, 3)
    with pytest.raises(ValueError, match="weight"):
        ProjectSession(tiny_G, target, weight=np.zeros((32, 32), np.float32))
    with pytest.raises(ValueError, match="weight"):
        ProjectSession(tiny_G, target, weight=np.full((32, 32), 2.0, np.float32))
    with pytest.raises(ValueError, match="target"):
        ProjectSession(tiny_G, target[:16])
    weight = np.zeros((32, 32), np.float32)
    weight[:, :16] = 1
    other = target.copy()
    other[:, 16:] = 255 - other[:, 16:]  # differs only where the weight is 0
    opts = ProjectOptions(max_steps=2, perceptual_weight=0.0)  # the perceptual term sees across edges
    a = ProjectSession(tiny_G, target, None, opts, weight=weight)
    b = ProjectSession(tiny_G, other, None, opts, weight=weight)
    assert a.step().loss == pytest.approx(b.step().loss, rel=1e-5)


def test_pivotal_tuning_uses_a_private_copy(tiny_G):
    """Pivotal tuning steps after the W+ cap tune a copy; the shared generator is unchanged."""
    before = {k: v.clone() for k, v in tiny_G.state_dict().items()}
    s = ProjectSession(tiny_G, _image(tiny_G, 4), None, ProjectOptions(max_steps=2, min_steps=2, pti_steps=2))
    steps = []
    while not s.done:
        steps.append(s.step())
    assert s.step_index == 4 and s.generator is not tiny_G and s.reason == "max_steps"
    for k, v in tiny_G.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(not torch.equal(v, before[k]) for k, v in s.generator.state_dict().items())
