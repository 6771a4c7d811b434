"""An FID-style score on the SynthFaces landmark detector's features (NOT Inception FID).

The Frechet distance between Gaussians fitted to pooled bottleneck features of the project's
own landmark detector (detector.py, trained on SynthFaces). It is comparable only with itself:
same detector weights, same image size, similar sample counts. Numbers are not comparable with
published Inception FIDs (e.g. DragGAN's 9.28).

    FD = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2)

computed in float64 with torch.linalg.eigh (no scipy).

``bootstrap_frechet`` gives the sampling spread of such scores: a score of a few hundred images
moves by several percent with the draw, so a comparison of two edit methods on the same faces
resamples the faces (pairs) once per draw for every method (a paired bootstrap). A draw with
replacement repeats about a third of the rows, and fewer distinct samples raise a Frechet
distance the way a smaller set does (by about half for the scores of 200 edits, which are mostly
finite-sample spread), so ``bootstrap_interval`` takes the spread of the draws and not their
location: a percentile interval on the log scale, moved so that its median is the estimate.
"""

from __future__ import annotations

import numpy as np
import torch


def _sqrtm_psd(s: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (negative eigenvalues clipped)."""
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def _as_features(feats_a, feats_b) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.as_tensor(np.asarray(feats_a), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(feats_b), dtype=torch.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"features must be [N, D] with the same D, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if len(a) < 2 or len(b) < 2:
        raise ValueError("need at least 2 samples per set")
    return a, b


def _gaussian(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(0), torch.cov(x.T).reshape(x.shape[1], -1)


def _frechet(mu_a, s_a, ra, mu_b, s_b) -> float:
    """The distance from N(mu_a, s_a), given ra = s_a^1/2, to N(mu_b, s_b)."""
    m = ra @ s_b @ ra
    ev = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0)
    fd = (mu_a - mu_b).square().sum() + s_a.trace() + s_b.trace() - 2 * ev.sqrt().sum()
    return float(fd.clamp(min=0))


def _frechet_of(a: torch.Tensor, b: torch.Tensor) -> float:
    """The distance between Gaussians fitted to two float64 feature tensors."""
    mu_a, s_a = _gaussian(a)
    return _frechet(mu_a, s_a, _sqrtm_psd(s_a), *_gaussian(b))


def frechet_distance(feats_a, feats_b) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [Na, D] and [Nb, D]."""
    return _frechet_of(*_as_features(feats_a, feats_b))


def frechet_distance_inf(
    feats_a, feats_b, fractions=(0.5, 0.6, 0.7, 0.8, 0.9, 1.0), draws: int = 50, seed: int = 0
) -> tuple[float, float]:
    """The score extrapolated to infinitely many samples, for paired sets (row i of both belongs
    together): the mean score of ``draws`` random subsets of each size fraction x N (drawn without
    replacement; the whole set once), fitted by a line in 1 / size (the bias of a Frechet distance
    estimate falls as 1 / N). Returns (intercept: the score at N -> inf, slope). For a few hundred
    samples the slope term can be most of the score, and it is about the same for two methods
    that edit the same faces, so it pulls their ratio toward 1; the intercepts compare what the
    methods changed."""
    a, b = _as_features(feats_a, feats_b)
    if len(a) != len(b):
        raise ValueError(f"paired sets must have as many rows: {len(a)} and {len(b)}")
    n = len(a)
    sizes = sorted({max(2, min(n, round(f * n))) for f in fractions})
    if len(sizes) < 2:
        raise ValueError(f"need two or more distinct subset sizes, got {sizes} from {n} rows")
    rng = np.random.default_rng(seed)
    means = []
    for m in sizes:
        picks = [np.arange(n)] if m == n else [rng.choice(n, m, replace=False) for _ in range(draws)]
        means.append(np.mean([_frechet_of(a[i], b[i]) for i in map(torch.as_tensor, picks)]))
    x = np.stack([np.ones(len(sizes)), 1.0 / np.asarray(sizes)], 1)
    (intercept, slope), *_ = np.linalg.lstsq(x, np.asarray(means), rcond=None)
    return float(intercept), float(slope)


def bootstrap_frechet(
    feats_ref, sets: dict[str, np.ndarray], n_boot: int = 1000, seed: int = 0
) -> dict[str, np.ndarray]:
    """Paired bootstrap of ``frechet_distance(sets[k], feats_ref)`` for every k: draw N row
    indices with replacement (N = len(feats_ref); row i of every set belongs with row i of the
    reference, e.g. one face before and after each method's edit), score every set on the same
    draw, ``n_boot`` times. Returns {k: [n_boot] scores}; ratios of two of them, draw by draw,
    give an interval for the ratio of the two methods' scores."""
    ref = torch.as_tensor(np.asarray(feats_ref), dtype=torch.float64)
    feats = {}
    for k, v in sets.items():
        _, b = _as_features(ref, v)
        if len(b) != len(ref):
            raise ValueError(f"set {k!r} has {len(b)} rows, the reference {len(ref)}: they must pair up")
        feats[k] = b
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    out = {k: np.empty(n_boot) for k in feats}
    for j in range(n_boot):
        idx = torch.as_tensor(rng.integers(0, len(ref), len(ref)))
        mu_a, s_a = _gaussian(ref[idx])
        ra = _sqrtm_psd(s_a)
        for k, b in feats.items():
            out[k][j] = _frechet(mu_a, s_a, ra, *_gaussian(b[idx]))
    return out


def recentred(draws, estimate: float) -> np.ndarray:
    """Positive bootstrap ``draws`` scaled so that their median is ``estimate``: their relative
    spread around the estimate, without the bias a resample's repeated rows put on their location
    (the module docstring)."""
    d = np.asarray(draws, dtype=np.float64)
    if d.ndim != 1 or not len(d) or not np.all(np.isfinite(d)) or np.any(d <= 0):
        raise ValueError("draws must be a non-empty 1-d array of positive finite numbers")
    return d * (estimate / np.median(d))


def bootstrap_interval(draws, estimate: float, level: float = 0.95) -> tuple[float, float]:
    """The (1 - level) / 2 and (1 + level) / 2 quantiles of ``recentred(draws, estimate)``."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    lo, hi = np.percentile(recentred(draws, estimate), [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def fid_score(images_a, images_b, detector=None) -> float:
    """FID-style score between two image sets (uint8 [N, H, W, 3] or float [N, 3, H, W] in [0, 1]).

    ``detector``: a loaded ``Detector`` (default: the shipped SynthFaces detector on the CPU).
    """
    if detector is None:
        from .detector import load_detector

        detector = load_detector()
    return frechet_distance(detector.features(images_a), detector.features(images_b))
