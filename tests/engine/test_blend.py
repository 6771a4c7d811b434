"""Latent blending: the composite changes pixels mostly inside the region and projects to a latent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server.engine.blend import blend_session, blend_target, feathered_mask
from server.engine.checkpoint import load_generator
from server.engine.generator import to_uint8
from server.engine.project import ProjectOptions


@pytest.fixture(scope="module")
def G():
    return load_generator().eval().requires_grad_(False)


def test_blend_changes_pixels_mostly_inside_the_region(G):
    """Mean change inside the region is several times the change outside it."""
    wb, ws = G.ws_from_seed(1, 0.7), G.ws_from_seed(2, 0.7)
    n = G.img_resolution
    region = np.zeros((n, n), bool)
    region[30 * n // 64 : 58 * n // 64, 14 * n // 64 : 50 * n // 64] = True  # mouth and chin
    target, weight = blend_target(G, wb, ws, region)
    with torch.no_grad():
        base = to_uint8(G.synthesis(wb)[0])[0].astype(np.float64)
    diff = np.abs(target - base).mean(-1)
    assert diff[region].mean() > 5 * diff[~region].mean()
    assert weight.shape == (n, n) and weight.min() >= 0.5 and weight.max() == 1.0


def test_blend_session_projects_toward_the_composite(G):
    """The blend session starts at the base latent and gets closer to the composite."""
    wb, ws = G.ws_from_seed(3, 0.7), G.ws_from_seed(4, 0.7)
    n = G.img_resolution
    region = np.zeros((n, n), bool)
    region[: n // 2] = True
    s = blend_session(G, wb, ws, region, ProjectOptions(max_steps=4, min_steps=4))
    torch.testing.assert_close(s.latent(), wb.cpu())
    before = s.psnr()
    while not s.done:
        s.step()
    assert s.psnr() > before


def test_blend_arguments_are_checked(G):
    """Empty regions, wrong shapes and unknown feature resolutions are refused."""
    w, n = G.ws_from_seed(0), G.img_resolution
    with pytest.raises(ValueError, match="empty"):
        blend_target(G, w, w, np.zeros((n, n), bool))
    with pytest.raises(ValueError, match="region"):
        blend_target(G, w, w, np.ones((n // 2, n // 2), bool))
    with pytest.raises(ValueError, match="feature_res"):
        blend_target(G, w, w, np.ones((n, n), bool), feature_res=12)


def test_feathered_mask_is_soft_and_bounded():
    """Feathering keeps values in [0, 1] and softens the edge."""
    r = np.zeros((16, 16), bool)
    r[:, :8] = True
    m = feathered_mask(r, 2.0)[0, 0]
    assert float(m.min()) >= 0 and float(m.max()) <= 1
    assert 0.2 < float(m[8, 7]) < 0.8 and float(m[8, 0]) > 0.99
