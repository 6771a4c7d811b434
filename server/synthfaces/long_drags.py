"""The drags people make on a face: a landmark group moved by 8-25% of the image size.

One definition for the benchmark (``scripts/bench_drag.py --protocol long``) and the predictor's
teacher drags (server/training/trajectories.py, the ``landmark_long_frac`` share): mouth corners
out and up (a smile), the chin down, the nose tip sideways (a turned head), the brows up, and the
whole head (every landmark) by one vector in any direction.
"""

from __future__ import annotations

import numpy as np

from .landmarks import LANDMARK_NAMES

# group -> (landmark names, how the group moves); None = every landmark
LONG_GROUPS: dict[str, tuple[tuple[str, ...] | None, str]] = {
    "mouth": (("mouth_left", "mouth_right"), "smile"),  # corners out and up, 15-45 deg above level
    "chin": (("jaw_4",), "down"),  # within 20 deg of straight down (an open mouth, a longer chin)
    "nose": (("nose_tip",), "sideways"),  # left or right within 20 deg of level (a turned head)
    "brows": (
        (
            "left_brow_outer",
            "left_brow_mid",
            "left_brow_inner",
            "right_brow_inner",
            "right_brow_mid",
            "right_brow_outer",
        ),
        "up",
    ),  # within 20 deg of straight up
    "head": (None, "any"),  # all landmarks by one vector in any direction
}
LONG_LENGTH = (0.08, 0.25)  # move length, fraction of the image size


def group_indices(group: str) -> list[int]:
    """Indices in ``LANDMARK_NAMES`` of a long group's landmarks."""
    names = LONG_GROUPS[group][0]
    return list(range(len(LANDMARK_NAMES))) if names is None else [LANDMARK_NAMES.index(m) for m in names]


def group_moves(group: str, lm: np.ndarray, res: int, rng: np.random.Generator) -> np.ndarray:
    """Targets of ``group`` for faces with landmarks ``lm`` [n, K, 2] -> [n, k, 2]: the group's
    landmarks moved by ``LONG_LENGTH`` of ``res`` in the group's direction (not clipped). Draws,
    in this order, n lengths, n deviations, then the direction's own n draws from ``rng``."""
    _, how = LONG_GROUPS[group]
    n = len(lm)
    length = rng.uniform(*LONG_LENGTH, n) * res  # [n]
    dev = np.radians(rng.uniform(-20, 20, n))
    if how == "smile":
        a = np.radians(rng.uniform(15, 45, n))
        out = np.stack([np.cos(a), -np.sin(a)], 1)  # image-right corner: right and up
        d = np.stack([out * [-1, 1], out], 1)  # [n, 2 points (left, right), 2]
    elif how == "down":
        d = np.stack([np.sin(dev), np.cos(dev)], 1)[:, None]
    elif how == "up":
        d = np.stack([np.sin(dev), -np.cos(dev)], 1)[:, None]
    elif how == "sideways":
        side = np.where(rng.uniform(size=n) < 0.5, -1.0, 1.0)
        d = (np.stack([np.cos(dev), np.sin(dev)], 1) * side[:, None])[:, None]
    else:  # any
        a = rng.uniform(0, 2 * np.pi, n)
        d = np.stack([np.cos(a), np.sin(a)], 1)[:, None]
    return lm[:, group_indices(group)] + d * length[:, None, None]


def long_moves(group: str, lm: np.ndarray, res: int, seed: int) -> np.ndarray:
    """The benchmark's targets: ``group_moves`` with draws that depend on (seed, group) only."""
    return group_moves(group, lm, res, np.random.default_rng([seed, list(LONG_GROUPS).index(group)]))
