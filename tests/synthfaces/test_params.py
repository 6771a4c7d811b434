"""The face latent: uniform slots, the Gaussian z a seed names, mixing geometry with looks."""

from __future__ import annotations

import numpy as np
import pytest

from server.synthfaces import (
    GEOMETRY_FIELDS,
    N_SLOTS,
    FaceParams,
    mix_params,
    params_from_uniforms,
    params_from_z,
    render,
    render_seed,
    sample_params,
    uniforms_from_z,
    z_from_seed,
)
from server.synthfaces.params import SLOT


def test_normalised_z_gives_uniform_slots():
    """Each slot of uniforms_from_z is uniform on [0, 1) (the sphere CDF is exact), slots uncorrelated."""
    z = np.random.default_rng(0).standard_normal((20000, N_SLOTS))
    u = uniforms_from_z(z)
    assert u.min() >= 0 and u.max() < 1
    hist = np.stack([np.histogram(u[:, k], bins=10, range=(0, 1))[0] for k in range(N_SLOTS)]) / len(u)
    assert np.abs(hist - 0.1).max() < 0.012  # ~5 sigma of a binomial share at n = 20000
    c = np.corrcoef(u[:, :8].T)
    assert np.abs(c - np.eye(8)).max() < 0.05


def test_face_depends_only_on_the_normalised_z():
    """The mapping network sees z / rms(z); the face must not change with z's length."""
    z = np.random.default_rng(1).standard_normal(N_SLOTS)
    a, b = params_from_z(z).to_dict(), params_from_z(3.7 * z).to_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert np.allclose(a[k], b[k], atol=1e-9), k


def test_seed_names_one_face_renderer_and_generator_agree():
    """render_seed(s) draws the face of the generator's z for seed s (numpy RandomState(s).randn)."""
    from server.engine.generator import z_from_seed as generator_z

    z = generator_z(12, N_SLOTS).numpy()[0].astype(np.float64)
    assert np.allclose(z, z_from_seed(12), atol=1e-6)
    a, _ = render_seed(12, 32)
    b, _ = render(params_from_z(z), 32)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # float32 z vs float64 z


def test_sample_params_matches_the_latent_distribution():
    """sample_params and params_from_z draw the same distribution (means of a few fields)."""
    rng = np.random.default_rng(2)
    a = [sample_params(rng) for _ in range(4000)]
    b = [params_from_z(z) for z in rng.standard_normal((4000, N_SLOTS))]
    for f in ("yaw", "smile", "mouth_open", "hair_length", "hair_style", "glasses", "scale"):
        ma = np.mean([float(getattr(p, f)) for p in a])
        mb = np.mean([float(getattr(p, f)) for p in b])
        sd = np.std([float(getattr(p, f)) for p in a])
        assert abs(ma - mb) < 0.1 * sd + 1e-9, f


def test_one_slot_changes_one_field():
    """Moving the smile slot changes the smile and nothing else."""
    u = np.full(N_SLOTS, 0.5)
    v = u.copy()
    v[SLOT["smile"]] = 0.9
    a, b = params_from_uniforms(u).to_dict(), params_from_uniforms(v).to_dict()
    assert [k for k in a if a[k] != b[k]] == ["smile"]


def test_discrete_fields_follow_their_probabilities():
    """Hair style 0 half the time, glasses a fifth, short hair about a third."""
    p = [params_from_uniforms(u) for u in np.random.default_rng(3).random((6000, N_SLOTS))]
    assert abs(np.mean([q.hair_style == 0 for q in p]) - 0.5) < 0.03
    assert abs(np.mean([q.glasses for q in p]) - 0.2) < 0.02
    assert abs(np.mean([q.hair_length == 0 for q in p]) - 0.35) < 0.03


def test_mix_params_takes_geometry_and_looks_apart():
    a = sample_params(np.random.default_rng(4))
    b = sample_params(np.random.default_rng(5))
    m = mix_params(a, b)
    for f in FaceParams.__dataclass_fields__:
        assert getattr(m, f) == getattr(a if f in GEOMETRY_FIELDS else b, f), f


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="uniforms"):
        params_from_uniforms(np.zeros(3))
    with pytest.raises(ValueError, match="last axis"):
        uniforms_from_z(np.zeros(5))
