"""Sharpness of generated faces against renders: edge strength and flat-area cleanliness.

SynthFaces renders are flat-shaded shapes with anti-aliased outlines, so their Sobel gradient
magnitudes are near zero almost everywhere and large on a thin set of edges. A blurred generator
lowers the strong edges; GAN texture and smears raise the flat areas. Two numbers catch both,
where a plain mean gradient does not (a blur that smears edges over more pixels keeps the mean):

* ``edge``: the mean of the top ``top`` share (2%) of gradient magnitudes over all pixels of a set;
* ``flat``: the median gradient magnitude over all pixels of a set.

Compare a generator's numbers with those of renders at the same size (ratios: edge >= 0.95 and
flat <= 1.5 are the default model's goals, docs/model.md).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def sobel_magnitude(images: np.ndarray, batch: int = 256) -> np.ndarray:
    """uint8 [N, H, W, 3] -> float32 [N, H - 2, W - 2] Sobel magnitude of the luma in [0, 1]."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.shape}")
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernel = torch.stack([kx, kx.t()]).unsqueeze(1)  # [2, 1, 3, 3]
    luma = torch.tensor([0.299, 0.587, 0.114])
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i : i + batch]).float() / 255.0  # [n, H, W, 3]
        y = (x @ luma).unsqueeze(1)  # [n, 1, H, W]
        g = F.conv2d(y, kernel)  # [n, 2, H-2, W-2], valid: no border artefacts
        out.append(g.square().sum(1).sqrt().numpy())
    return np.concatenate(out)


def sharpness(images: np.ndarray, top: float = 0.02) -> dict[str, float]:
    """``{"edge": mean of the top share of magnitudes, "flat": median magnitude}`` of a set."""
    m = sobel_magnitude(images).reshape(-1)
    k = max(1, int(round(top * m.size)))
    strongest = np.partition(m, m.size - k)[m.size - k :]
    return {"edge": float(strongest.mean()), "flat": float(np.median(m))}


def sharpness_ratios(generated: np.ndarray, rendered: np.ndarray, top: float = 0.02) -> dict[str, float]:
    """Generated over rendered: ``edge`` (goal >= 0.95) and ``flat`` (goal <= 1.5), with both sets' values."""
    g, r = sharpness(generated, top), sharpness(rendered, top)
    return {
        "edge_ratio": g["edge"] / r["edge"],
        "flat_ratio": g["flat"] / max(r["flat"], 1e-12),
        "generated": g,
        "rendered": r,
    }
