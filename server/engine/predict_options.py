"""The settings of a predictor-mode drag (``PredictOptions``) and their checks.

``PredictSession`` (``server/engine/predict_session.py``) takes them; a predictor file recommends
some of them (``PredictOptions.recommended``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .drag_options import DTYPES, _check_lost_ratio
from .predictor_io import PredictorBundle
from .stop_rules import LOST_RATIO, STALL_MEASURES, default_stop_distance

BUDGET_RULES = ("fixed", "fit", "cover")
# Predictor files made before the drag ran to its end recommend a step budget (max_steps 4,
# budget_rule "cover"); a drag now runs until the handles arrive, stall or get lost, or the
# caller's cap, so ``PredictOptions.recommended`` ignores these keys of a file's defaults.
FILE_BUDGET_KEYS = frozenset({"max_steps", "budget_rule"})


@dataclass(frozen=True)
class PredictOptions:
    """Settings of one predictor-mode drag (radii and stop rule as ``DragOptions``)."""

    substep: float = 2.0  # pixels each handle is asked to move per step (the last one is shorter)
    single_shot: bool = False  # one prediction over the whole distance, then a final tracking step
    reg_alpha: float | None = None  # regularizer strength; None = the trained default, 0 = off
    # share of the off-distribution part gathered since the drag's start that each step also takes
    # back (regularize_chain; 0 = each step on its own, the first predictor's rule)
    reg_drift: float = 0.1
    max_steps: int = 200  # step cap since the points last changed (the last step only tracks)
    # how the cap follows the drag's length, need = ceil(longest distance / substep) sub-steps +
    # the tracking step: "fixed" = max_steps; "fit" = min(max_steps, need) (no correction steps
    # beyond the plan); "cover" = max(max_steps, need). Only "fixed" lets a drag run to its end.
    budget_rule: str = "fixed"
    stop_distance: float | None = None  # pixels; None = DragGAN's rule (1 px up to 5 handles, else 2)
    # stalled: the mean handle distance (stall_measure "mean"; "max": the largest, the first
    # rule) fell by no more than stall_px (px at 512, scaled by res / 512: 0.5 px at 64 px, 1 px
    # at 128 px) below its best over the last stall_steps steps (0 = off); see stop_rules
    stall_steps: int = 8
    stall_px: float = 4.0
    stall_measure: str = "mean"
    lost_ratio: float | None = LOST_RATIO  # a handle is lost above this match ratio (stop_rules); None: off
    r2: float = 12.0  # point-tracking search half-size at 512 px
    r2_min: int = 3  # lower bound on the scaled r2, pixels
    mask_step: float = 0.5  # fraction of a Polyak step on the fixed-region term per iteration (0 = off)
    mask_iters: int = 1  # mask-correction iterations per sub-step (each one forward + backward)
    feature_blocks: tuple[int, ...] | None = None  # tracking blocks; None = G.default_feature_block()
    noise_mode: str = "const"  # "const" or "none"
    dtype: str = "float32"  # synthesis dtype (the predictor runs in float32)

    def __post_init__(self) -> None:
        for name in ("substep", "r2"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive finite number, got {v!r}")
        if self.reg_alpha is not None and not (
            isinstance(self.reg_alpha, (int, float)) and 0.0 <= self.reg_alpha <= 1.0
        ):
            raise ValueError(f"reg_alpha must be None or in [0, 1], got {self.reg_alpha!r}")
        if not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise ValueError(f"max_steps must be an integer >= 1, got {self.max_steps!r}")
        if not (isinstance(self.reg_drift, (int, float)) and 0.0 <= self.reg_drift <= 1.0):
            raise ValueError(f"reg_drift must be in [0, 1], got {self.reg_drift!r}")
        if not (isinstance(self.stall_steps, int) and self.stall_steps >= 0):
            raise ValueError(f"stall_steps must be an integer >= 0, got {self.stall_steps!r}")
        if not (
            isinstance(self.stall_px, (int, float)) and math.isfinite(self.stall_px) and self.stall_px >= 0
        ):
            raise ValueError(f"stall_px must be a finite number >= 0, got {self.stall_px!r}")
        if self.stall_measure not in STALL_MEASURES:
            raise ValueError(f"stall_measure must be one of {STALL_MEASURES}, got {self.stall_measure!r}")
        _check_lost_ratio(self.lost_ratio)
        if self.budget_rule not in BUDGET_RULES:
            raise ValueError(f"budget_rule must be one of {BUDGET_RULES}, got {self.budget_rule!r}")
        if self.stop_distance is not None and not (
            math.isfinite(self.stop_distance) and self.stop_distance >= 0
        ):
            raise ValueError(
                f"stop_distance must be None or a finite number >= 0, got {self.stop_distance!r}"
            )
        if self.r2_min < 1:
            raise ValueError("r2_min must be >= 1 pixel")
        if not (isinstance(self.mask_step, (int, float)) and 0.0 <= self.mask_step <= 1.0):
            raise ValueError(f"mask_step must be in [0, 1], got {self.mask_step!r}")
        if not (isinstance(self.mask_iters, int) and self.mask_iters >= 0):
            raise ValueError(f"mask_iters must be an integer >= 0, got {self.mask_iters!r}")
        if self.feature_blocks is not None:
            blocks = tuple(int(b) for b in self.feature_blocks)
            if not blocks:
                raise ValueError("feature_blocks must name at least one block (or be None for the default)")
            object.__setattr__(self, "feature_blocks", blocks)
        if self.noise_mode not in ("const", "none"):
            raise ValueError(f"noise_mode must be 'const' or 'none', got {self.noise_mode!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")

    @classmethod
    def recommended(cls, model: PredictorBundle, **changes: Any) -> PredictOptions:
        """The options the predictor was trained for (its file's ``defaults``: the sub-step, the
        regularizer's strength; not its step budget, ``FILE_BUDGET_KEYS``), then ``changes``."""
        known = {f.name for f in dataclasses.fields(cls)} - FILE_BUDGET_KEYS
        base = {k: v for k, v in model.defaults.items() if k in known}
        if "feature_blocks" in base and base["feature_blocks"] is not None:
            base["feature_blocks"] = tuple(base["feature_blocks"])
        return cls(**{**base, **changes})

    @classmethod
    def parse_changes(cls, items: Sequence[str]) -> dict[str, Any]:
        """``["budget_rule=fit", "max_steps=4"]`` (command-line ``KEY=VALUE``; VALUE is read as
        JSON, else taken as a string) -> a checked dict of option changes; ValueError if bad."""
        known = {f.name for f in dataclasses.fields(cls)}
        out: dict[str, Any] = {}
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or key not in known:
                raise ValueError(f"{item!r}: write KEY=VALUE with KEY one of {sorted(known)}")
            try:
                out[key] = json.loads(value)
            except ValueError:
                out[key] = value
        try:
            cls(**out)
        except TypeError as e:
            raise ValueError(str(e)) from None
        return out

    def radius(self, resolution: int) -> int:
        """The tracking search half-size in pixels at ``resolution`` (as ``DragOptions.radii``)."""
        return max(self.r2_min, round(self.r2 * resolution / 512))

    def stall_px_for(self, resolution: int) -> float:
        """The stall rule's least progress in pixels at ``resolution`` (``stall_px`` is at 512 px)."""
        return self.stall_px * resolution / 512

    def stop_distance_for(self, resolution: int, n_handles: int) -> float:
        if self.stop_distance is not None:
            return float(self.stop_distance)
        return default_stop_distance(resolution, n_handles)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Every option except the forward-pass ones may change mid-session.
LIVE_OPTIONS = frozenset(
    {
        "substep",
        "single_shot",
        "reg_alpha",
        "reg_drift",
        "max_steps",
        "budget_rule",
        "stop_distance",
        "stall_steps",
        "stall_px",
        "stall_measure",
        "lost_ratio",
        "r2",
        "r2_min",
        "mask_step",
        "mask_iters",
    }
)
