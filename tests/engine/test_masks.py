"""Masked drags: the fixed-region term with its tolerance, and a masked drag on the shipped model
that reaches its target while the fixed region changes far less than without the mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server.engine.checkpoint import load_generator
from server.engine.drag import DragSession
from server.engine.drag_options import DragOptions
from server.engine.generator import to_uint8
from server.engine.tracking import mask_loss
from server.synthfaces.detector import load_detector
from server.synthfaces.landmarks import LANDMARK_NAMES


def test_tolerance_lets_small_drift_go_free_and_prices_the_rest_like_draggan() -> None:
    """tau = tolerance x mean |F0|: changes below it cost nothing, beyond it the excess is L1."""
    f0 = torch.ones(1, 2, 4, 4)
    fixed = torch.ones(4, 4, dtype=torch.bool)
    f = f0 + 0.2  # every fixed feature drifts by 0.2
    assert mask_loss(f, f0, fixed).item() == pytest.approx(0.2)  # DragGAN's plain L1
    assert mask_loss(f, f0, fixed, tolerance=0.3).item() == 0.0  # within tau = 0.3
    assert mask_loss(f0 + 0.5, f0, fixed, tolerance=0.3).item() == pytest.approx(0.2)  # the excess
    with pytest.raises(ValueError, match="mask_tolerance"):
        DragOptions(mask_tolerance=-1.0)


@pytest.fixture(scope="module")
def G():
    return load_generator()


def _mouth_drag(G, seed: int, mask: bool, steps: int = 300):
    """Drag the right mouth corner out and up (5 px at 64 px); with ``mask``, a flexible band
    over the mouth (the DragGAN GUI's flexible brush). Returns the last step's result and the mean
    change of the image outside the band (0-255)."""
    res = G.img_resolution
    ws = G.ws_from_seed(seed)
    with torch.no_grad():
        img0 = G.synthesize(ws)[0]
    h = load_detector().detect(to_uint8(img0))[0, LANDMARK_NAMES.index("mouth_right")]
    t = h + np.array([4.0, -3.0]) * res / 64
    band = np.zeros((res, res), bool)
    band[int(h[1] - 8 * res / 64) : int(h[1] + 8 * res / 64), :] = True
    sess = DragSession(
        G, ws, [h.tolist()], [t.tolist()], mask=band if mask else None, options=DragOptions(max_steps=steps)
    )
    while True:
        r = sess.step()
        if r.done:
            break
    with torch.no_grad():
        img1 = G.synthesize(sess.latent())[0]
    change = ((img1 - img0).abs().mean(1)[0] * 127.5).numpy()
    return r, float(change[~band].mean())


VALIDATION_FACES = (100001, 100002, 100003, 100004)


def test_masked_drags_reach_their_targets_and_keep_the_fixed_region(G, one_torch_thread) -> None:
    """With the defaults (lambda 20), a drag with a flexible band over the mouth arrives within the
    room's 300 steps on each of the first four validation faces, and outside the band the image
    changes less than without the mask on every face and under half as much in the median. Measured
    on the shipped 128 px model over seeds 100001-100008: the unmasked drag arrives
    on 8 of 8 (34-58 steps), the masked one on 7 (100005 runs to the cap), and the change outside
    the band falls to 0.13-0.51 of the unmasked drag's, median 0.24."""
    ratios = []
    for seed in VALIDATION_FACES:
        free, free_change = _mouth_drag(G, seed, mask=False)
        masked, masked_change = _mouth_drag(G, seed, mask=True)
        assert free.reason == "reached" and masked.reason == "reached", (seed, free.reason, masked.reason)
        assert masked_change < free_change, (seed, masked_change, free_change)
        ratios.append(masked_change / free_change)
    assert float(np.median(ratios)) < 0.5, ratios
