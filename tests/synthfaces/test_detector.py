"""Landmark detector, FID-style score and the geometric sanity check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server.synthfaces import NUM_LANDMARKS, geometric_sanity, render_batch
from server.synthfaces.detector import (
    DetectorConfig,
    LandmarkDetector,
    detect,
    features,
    load_detector,
    save_detector,
)
from server.synthfaces.fid import (
    bootstrap_frechet,
    bootstrap_interval,
    fid_score,
    frechet_distance,
    frechet_distance_inf,
)

# held-out faces: training uses seeds < 40000, validation 1_001_000+, the docs' evaluation 1_000_000+
SEEDS = range(2_000_000, 2_000_032)
MAX_MEAN_ERR_PX = 1.0  # at 64 px; the shipped detector measures 0.39 px held out (docs/synthfaces.md)


@pytest.fixture(scope="module")
def detector():
    return load_detector()


@pytest.fixture(scope="module")
def faces64():
    return render_batch(SEEDS, 64)


def test_shipped_detector_is_accurate(detector, faces64):
    """The shipped detector finds landmarks of 32 unseen rendered faces within 1 px on average."""
    images, lms = faces64
    pred = detector.detect(images)
    assert pred.shape == (32, NUM_LANDMARKS, 2) and pred.dtype == np.float32
    err = np.linalg.norm(pred - lms, axis=-1)
    assert err.mean() < MAX_MEAN_ERR_PX, err.mean()
    assert geometric_sanity(pred).all()


def test_any_image_size_and_float_input(detector):
    """128 px images come back in 128 px coordinates; float [N, 3, H, W] tensors work too."""
    images, lms = render_batch(SEEDS[:8], 128)
    pred = detector.detect(images)
    assert np.linalg.norm(pred - lms, axis=-1).mean() < 2 * MAX_MEAN_ERR_PX
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    np.testing.assert_allclose(detector.detect(x), pred, atol=1e-3)
    single = detector.detect(np.repeat(np.repeat(images[0], 3, 0), 3, 1))  # one [384, 384, 3] image
    assert single.shape == (1, NUM_LANDMARKS, 2)
    np.testing.assert_allclose(single[0], 3 * pred[0], atol=1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        detector.detect(x * 2 - 1)


def test_module_level_detect_uses_the_shipped_detector(detector, faces64):
    """detect() and features() without a detector load the shipped one once."""
    np.testing.assert_allclose(detect(faces64[0][:4]), detector.detect(faces64[0][:4]), atol=1e-5)
    assert features(faces64[0][:4]).shape == (4, detector.cfg.feat_dim)


def test_features_are_z_scored(detector, faces64):
    """features() pools the bottleneck: [N, feat_dim], z-scored on rendered faces."""
    f = detector.features(faces64[0])
    assert f.shape == (32, detector.cfg.feat_dim) and np.isfinite(f).all()
    assert abs(f.mean()) < 0.3 and 0.6 < f.std() < 1.4


def test_save_load_roundtrip(tmp_path):
    """A saved detector loads with its config and gives the same outputs (fp16 weights)."""
    torch.manual_seed(0)
    cfg = DetectorConfig(c1=8, c2=16, feat_dim=16)
    model = LandmarkDetector(cfg).eval()
    for m in model.modules():  # make the fp16 round trip exact
        for p in m.parameters(recurse=False):
            p.data = p.data.half().float()
    mean, std = torch.rand(16), torch.rand(16) + 0.5
    path = save_detector(model, tmp_path / "d.safetensors", feature_stats=(mean, std))
    det = load_detector(path)
    assert det.cfg == cfg
    x = torch.rand(2, 3, 64, 64)
    np.testing.assert_allclose(det.detect(x), model(x).detach().numpy(), atol=1e-4)
    raw = model.pooled_features(x).detach()
    np.testing.assert_allclose(det.features(x), ((raw - mean) / std).numpy(), atol=1e-5)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="train it with"):
        load_detector(tmp_path / "nope.safetensors")


def test_frechet_distance_zero_and_growing():
    """Identical sets give ~0; the distance grows with a shift (|shift|^2 for equal covariances)."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 16))
    assert frechet_distance(a, a) < 1e-8
    shifts = [frechet_distance(a, a + s) for s in (0.1, 0.5, 1.0)]
    np.testing.assert_allclose(shifts, [16 * 0.01, 16 * 0.25, 16 * 1.0], rtol=1e-6)
    # diagonal covariances: FD = |mu_a - mu_b|^2 + sum (sigma_a - sigma_b)^2
    b = rng.normal(size=(4000, 16)) * 2.0 + 0.3
    expected = 16 * 0.3**2 + np.sum((a.std(0, ddof=1) - b.std(0, ddof=1)) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.05)


def test_bootstrap_frechet_is_paired_and_brackets_the_score():
    """Every set is scored on the same draw of rows: a set that is the reference shifted by a
    constant scores exactly |shift|^2 on every draw, two sets with the same edits score
    identically, and the draws of a noisy edit spread around its full-sample score."""
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(300, 8))
    noisy = ref + rng.normal(size=ref.shape) * 0.5
    boot = bootstrap_frechet(ref, {"shift": ref + 0.5, "noisy": noisy, "same": noisy.copy()}, n_boot=200)
    assert {k: v.shape for k, v in boot.items()} == {"shift": (200,), "noisy": (200,), "same": (200,)}
    np.testing.assert_allclose(boot["shift"], 8 * 0.25, rtol=1e-6)
    np.testing.assert_array_equal(boot["noisy"], boot["same"])
    lo, hi = np.percentile(boot["noisy"], [2.5, 97.5])
    assert lo < frechet_distance(noisy, ref) < hi and hi - lo > 0.05
    assert np.array_equal(boot["noisy"], bootstrap_frechet(ref, {"noisy": noisy}, n_boot=200)["noisy"])
    with pytest.raises(ValueError, match="pair up"):
        bootstrap_frechet(ref, {"short": noisy[:-1]})
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_frechet(ref, {"noisy": noisy}, n_boot=0)


def test_frechet_distance_inf_removes_the_finite_sample_part():
    """b = a + independent noise: the population distance is D (sqrt(1 + s^2) - 1)^2; the estimate
    from 300 pairs in 32 dimensions is about twice that, the extrapolation is close to it."""
    rng = np.random.default_rng(3)
    d, s = 32, 0.5
    a = rng.normal(size=(300, d))
    b = a + rng.normal(size=a.shape) * s
    truth = d * (np.sqrt(1 + s**2) - 1) ** 2
    plain = frechet_distance(b, a)
    inf, slope = frechet_distance_inf(b, a, draws=30)
    assert plain > 1.6 * truth and slope > 0
    assert abs(inf - truth) < 0.3 * (plain - truth)
    assert frechet_distance_inf(a + 0.5, a) == pytest.approx((d * 0.25, 0.0), abs=1e-6)
    with pytest.raises(ValueError, match="as many rows"):
        frechet_distance_inf(b[:-1], a)
    with pytest.raises(ValueError, match="distinct subset sizes"):
        frechet_distance_inf(b[:2], a[:2])


def test_bootstrap_interval_keeps_the_spread_and_drops_the_bias():
    """Draws centred 1.5x above the estimate (what repeated rows do to a Frechet distance) give an
    interval around the estimate with the draws' relative width; bad draws are refused."""
    rng = np.random.default_rng(2)
    draws = 3.0 * 1.5 * np.exp(rng.normal(0, 0.1, 4000))
    lo, hi = bootstrap_interval(draws, 3.0)
    assert lo < 3.0 < hi
    assert hi / lo == pytest.approx(np.exp(2 * 1.96 * 0.1), rel=0.05)
    assert bootstrap_interval(draws, 3.0, level=0.5)[1] < hi
    for bad in ([], [1.0, -1.0], [1.0, float("nan")]):
        with pytest.raises(ValueError, match="positive finite"):
            bootstrap_interval(bad, 1.0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(draws, 1.0, level=1.0)


def test_fid_score_sees_degradation(detector, faces64):
    """Rendered-vs-rendered scores lower than rendered-vs-noisy."""
    a = faces64[0]
    b, _ = render_batch(range(2_100_000, 2_100_032), 64)
    noisy = np.clip(b + np.random.default_rng(0).normal(0, 40, b.shape), 0, 255).astype(np.uint8)
    assert fid_score(a, a, detector) < 1e-6
    assert fid_score(a, b, detector) < fid_score(a, noisy, detector)


def test_geometric_sanity_on_rendered_and_shuffled():
    """Every rendered landmark set passes; shuffled or left/right-swapped ones fail."""
    _, lms = render_batch(range(500, 700), 64)
    assert geometric_sanity(lms).all()
    assert geometric_sanity(lms[0]).shape == (1,)
    rng = np.random.default_rng(0)
    shuffled = np.stack([lm[rng.permutation(NUM_LANDMARKS)] for lm in lms])
    assert geometric_sanity(shuffled).mean() < 0.02
    mirrored = lms.copy()
    mirrored[..., 0] = 64 - mirrored[..., 0]  # mirrored without renaming: left is now right
    assert not geometric_sanity(mirrored).any()


def test_pair_spread_is_the_mean_landmark_distance_between_pairs() -> None:
    from server.synthfaces.landmarks import pair_spread

    a = np.zeros((NUM_LANDMARKS, 2))
    faces = np.stack([a, a + [3.0, 4.0], a, a])  # pair 0: 5 px apart, pair 1: identical
    assert pair_spread(faces) == pytest.approx(2.5)
    for bad in (faces[:3], faces[:, :, :1], faces[0]):
        with pytest.raises(ValueError, match="N even"):
            pair_spread(bad)
