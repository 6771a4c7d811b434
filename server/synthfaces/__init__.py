"""SynthFaces: deterministic procedural cartoon faces with exact landmarks.

API (stable, other modules build on it)::

    FaceParams                  frozen dataclass of continuous face parameters (params.py)
    sample_params(rng)          -> FaceParams, rng a numpy.random.Generator
    render(params, size=64)     -> (image uint8 [size, size, 3], landmarks float32 [K, 2])
    render_seed(seed, size=64)  -> same, params = params_from_z(z_from_seed(seed))
    params_from_z(z)            -> FaceParams of a Gaussian z [N_SLOTS] (the distilled generator's
                                   latent: a seed names the same face in renderer and generator)
    mix_params(geometry, look)  -> geometry of one face, colours and light of another
    render_batch(seeds, size)   -> (uint8 [N, size, size, 3], float32 [N, K, 2])
    LANDMARK_NAMES, NUM_LANDMARKS, LANDMARK_GROUPS ("jaw", "left_eye", ..., "one", "five", "all")
    face_size(landmarks)        -> inter-ocular distance (outer eye corners) in pixels
    geometric_sanity(landmarks) -> bool [N]: does each landmark set look like a face?

Phase 2 (import from the submodules; they need torch):
    server.synthfaces.detector: load_detector(path=None, device="cpu") -> Detector with
        .detect(images) -> float32 [N, K, 2] (any image size) and .features(images) -> [N, D]
    server.synthfaces.fid: frechet_distance(feats_a, feats_b), fid_score(images_a, images_b, detector),
        bootstrap_frechet(feats_ref, sets, n_boot, seed)
        (an FID-style score on the detector's features, not Inception FID)

Landmarks are (x, y) pixel coordinates; pixel (i, j) covers [i, i+1) x [j, j+1), so its centre
is (i + 0.5, j + 0.5) and the image centre is (size / 2, size / 2). "left"/"right" are image
sides. Faces are drawn at 4x with Pillow and box-downscaled (anti-aliased); a 64 px face takes
about 2-3 ms on one core (docs/synthfaces.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .landmarks import LANDMARK_GROUPS, LANDMARK_NAMES, NUM_LANDMARKS, face_size, geometric_sanity
from .params import (
    GEOMETRY_FIELDS,
    HAIR_STYLES,
    N_SLOTS,
    FaceParams,
    mix_params,
    params_from_uniforms,
    params_from_z,
    sample_params,
    uniforms_from_z,
    z_from_seed,
)
from .render import render

__all__ = [
    "FaceParams",
    "GEOMETRY_FIELDS",
    "HAIR_STYLES",
    "LANDMARK_GROUPS",
    "LANDMARK_NAMES",
    "NUM_LANDMARKS",
    "N_SLOTS",
    "face_size",
    "geometric_sanity",
    "mix_params",
    "params_from_uniforms",
    "params_from_z",
    "render",
    "render_batch",
    "render_seed",
    "sample_params",
    "uniforms_from_z",
    "z_from_seed",
]


def render_seed(seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Render the face named by ``seed`` (the same image on every machine, and the same face the
    distilled default generator draws for that seed)."""
    return render(params_from_z(z_from_seed(seed)), size)


def render_batch(seeds: Sequence[int], size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Render many seeds: uint8 [N, size, size, 3] and float32 [N, K, 2]."""
    images = np.empty((len(seeds), size, size, 3), dtype=np.uint8)
    lms = np.empty((len(seeds), NUM_LANDMARKS, 2), dtype=np.float32)
    for i, s in enumerate(seeds):
        images[i], lms[i] = render_seed(int(s), size)
    return images, lms
