"""The settings of a DragGAN optimisation drag (``DragOptions``) and their checks.

``DragSession`` (``server/engine/drag.py``) takes them; ``PredictOptions`` shares the dtype table
and the lost-ratio check.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from .stop_rules import LOST_RATIO, default_stop_distance

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class DragOptions:
    """Settings of one drag. Radii are given at 512 px and scaled like the official code.

    ``r1``/``r2`` become ``round(r * res / 512)`` pixels (Python rounding, as DragGAN), then
    are raised to at least ``r1_min``/``r2_min``: at 64-128 px the official scaling would give
    r1 = 0-1 px (a motion-supervision patch of one pixel or none) and r2 = 2-3 px, so the
    defaults keep r1 >= 2 px (a 3x3 patch) and r2 >= 3 px. At 256 px and up nothing changes.

    ``stop_distance=None`` uses the paper's rule: done when every handle is within 1 px of its
    target for up to 5 handles, 2 px otherwise, scaled by res/512 above 512 px (so 2 / 4 px at
    1024 px) and never below 1 px (the official code's max(2, 2 * res / 512) is coarser).
    Handles within 1 px get no motion supervision, so a stop distance under 1 px can only end
    at ``max_steps``.

    ``max_steps`` counts steps since the points last changed; the last of them only tracks
    (no update), so a session that stops has ``latent()`` equal to its last frame's latent.
    """

    space: str = "w+"  # "w+": optimise rows 0..n_opt_rows-1 independently; "w": one shared row offset
    lr: float = 2e-3  # Adam step size (paper: 2e-3 FFHQ, cats, cars; 1e-3 otherwise)
    lambda_mask: float = 20.0  # weight of the fixed-region term (not scaled with resolution)
    mask_tolerance: float = 0.3  # free drift of fixed features, x mean |F0| (0 = DragGAN's plain L1)
    r1: float = 3.0  # motion-supervision radius at 512 px
    r2: float = 12.0  # point-tracking search half-size at 512 px
    r1_min: int = 2  # lower bound on the scaled r1, pixels
    r2_min: int = 3  # lower bound on the scaled r2, pixels
    max_steps: int = 200  # step budget since the points last changed
    stop_distance: float | None = None  # pixels; None = paper rule (see class docstring)
    lost_ratio: float | None = LOST_RATIO  # a handle is lost above this match ratio (stop_rules); None: off
    n_opt_rows: int = 6  # number of leading W+ rows optimised (clipped to num_ws)
    feature_blocks: tuple[int, ...] | None = None  # synthesis blocks read; None = G.default_feature_block()
    noise_mode: str = "const"  # "const" or "none" (random noise would make tracking meaningless)
    dtype: str = "float32"  # synthesis dtype: float32, float16 or bfloat16 (features are tracked in fp32)

    def __post_init__(self) -> None:
        if self.space not in ("w", "w+"):
            raise ValueError(f"space must be 'w' or 'w+', got {self.space!r}")
        for name in ("lr", "r1", "r2"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive finite number, got {v!r}")
        if not (
            isinstance(self.lambda_mask, (int, float))
            and math.isfinite(self.lambda_mask)
            and self.lambda_mask >= 0
        ):
            raise ValueError(f"lambda_mask must be a finite number >= 0, got {self.lambda_mask!r}")
        if not (
            isinstance(self.mask_tolerance, (int, float))
            and math.isfinite(self.mask_tolerance)
            and self.mask_tolerance >= 0
        ):
            raise ValueError(f"mask_tolerance must be a finite number >= 0, got {self.mask_tolerance!r}")
        if self.r1_min < 1 or self.r2_min < 1:
            raise ValueError("r1_min and r2_min must be >= 1 pixel")
        if not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise ValueError(f"max_steps must be an integer >= 1, got {self.max_steps!r}")
        if self.stop_distance is not None and not (
            math.isfinite(self.stop_distance) and self.stop_distance >= 0
        ):
            raise ValueError(
                f"stop_distance must be None or a finite number >= 0, got {self.stop_distance!r}"
            )
        _check_lost_ratio(self.lost_ratio)
        if not (isinstance(self.n_opt_rows, int) and self.n_opt_rows >= 1):
            raise ValueError(f"n_opt_rows must be an integer >= 1, got {self.n_opt_rows!r}")
        if self.feature_blocks is not None:
            blocks = tuple(int(b) for b in self.feature_blocks)
            if not blocks:
                raise ValueError("feature_blocks must name at least one block (or be None for the default)")
            object.__setattr__(self, "feature_blocks", blocks)
        if self.noise_mode not in ("const", "none"):
            raise ValueError(f"noise_mode must be 'const' or 'none', got {self.noise_mode!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")

    def radii(self, resolution: int) -> tuple[int, int]:
        """(r1, r2) in pixels at ``resolution``: round(r * res / 512), then the minimums."""
        s = resolution / 512
        return max(self.r1_min, round(self.r1 * s)), max(self.r2_min, round(self.r2 * s))

    def stop_distance_for(self, resolution: int, n_handles: int) -> float:
        """The stop distance in pixels for ``n_handles`` handles at ``resolution``."""
        if self.stop_distance is not None:
            return float(self.stop_distance)
        return default_stop_distance(resolution, n_handles)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Options a running session may change; the others shape the optimiser or the features.
LIVE_OPTIONS = frozenset(
    {"lr", "lambda_mask", "r1", "r2", "r1_min", "r2_min", "max_steps", "stop_distance", "lost_ratio"}
)


def _check_lost_ratio(v: float | None) -> None:
    if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
        raise ValueError(f"lost_ratio must be None or a positive finite number, got {v!r}")
