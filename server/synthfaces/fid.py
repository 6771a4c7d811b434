"""An FID-style score on the SynthFaces landmark detector's features (NOT Inception FID).

The Frechet distance between Gaussians fitted to pooled bottleneck features of the project's
own landmark detector (detector.py, trained on SynthFaces). It is comparable only with itself:
same detector weights, same image size, similar sample counts. Numbers are not comparable with
published Inception FIDs (e.g. DragGAN's 9.28).

    FD = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2)

computed in float64 with torch.linalg.eigh (no scipy).
"""

from __future__ import annotations

import numpy as np
import torch


def _sqrtm_psd(s: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (negative eigenvalues clipped)."""
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(feats_a, feats_b) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [Na, D] and [Nb, D]."""
    a = torch.as_tensor(np.asarray(feats_a), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(feats_b), dtype=torch.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"features must be [N, D] with the same D, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if len(a) < 2 or len(b) < 2:
        raise ValueError("need at least 2 samples per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    ra = _sqrtm_psd(s_a)
    m = ra @ s_b @ ra
    ev = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0)
    fd = (mu_a - mu_b).square().sum() + s_a.trace() + s_b.trace() - 2 * ev.sqrt().sum()
    return float(fd.clamp(min=0))


def fid_score(images_a, images_b, detector=None) -> float:
    """FID-style score between two image sets (uint8 [N, H, W, 3] or float [N, 3, H, W] in [0, 1]).

    ``detector``: a loaded ``Detector`` (default: the shipped SynthFaces detector on the CPU).
    """
    if detector is None:
        from .detector import load_detector

        detector = load_detector()
    return frechet_distance(detector.features(images_a), detector.features(images_b))
