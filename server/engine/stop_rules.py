"""When a drag ends by itself: the rules both edit sessions share (``DragSession``, ``PredictSession``).

A session checks them after each step's point tracking, in this order:

* **lost**: a handle's feature is no longer found near it. Point tracking moves each handle to the
  pixel of its search window whose feature is nearest to the handle's template f_k (its feature
  where it was placed). ``match`` = that nearest feature distance / the template's *spread*, the
  median distance from f_k to the features of its own search window when it was placed
  (``tracking.template_spread``): about 0 while the handle's content is in view, near 1 when the
  best match is no better than a typical pixel around the place it started from. A handle whose
  match exceeds ``LOST_RATIO`` is lost (``track_and_flag``): its tracked position means nothing
  any more (motion supervision or a prediction there would drag whatever is there), so from then
  on it keeps the position it had before, is neither supervised nor predicted, and counts for
  neither arrival nor the stall rule; it stays lost until it is placed again. The drag goes on
  with the other handles (one lost landmark of thirty no longer ends a whole-head drag) and
  ends with reason ``lost`` when every handle is lost, or when all the others have arrived: a
  drag with a lost handle never reports ``reached``. ``LOST_RATIO`` is calibrated on generated
  faces by ``scripts/calibrate_tracking.py`` (docs/predictor.md, "Lost handles").
* **reached**: every handle within the stop distance of its target (DragGAN's rule:
  ``DragOptions.stop_distance_for``) and none lost (``arrival``).
* **max_steps**: the session's step cap (the room's ``max_steps``, the CLI's ``--steps``).
* **stalled** (predictor only): the drag has come no closer to arriving for a while: over the
  last ``stall_steps`` steps (8) the mean handle-to-target distance (of the handles not lost)
  never fell below its smallest value before them by more than ``stall_px`` (0.5 px at 64 px,
  1 px at 128 px: ``PredictOptions.stall_px_for``). ``StallWatch`` keeps the record. The mean
  measures the drag as a whole: with many handles some always jitter by a pixel, so a rule on
  any single handle ("no handle got closer") kept stuck drags going, and the largest distance
  (the first rule, ``stall_measure="max"``) ended drags that were still closing in, since one
  handle that point tracking cannot follow (a jaw-line landmark, say) held it while the other
  29 moved 10 px. With one handle the mean is that handle's distance. The optimiser keeps
  DragGAN's rule (reached or the cap): its Adam steps move a handle a fraction of a pixel per
  step, often after a plateau, so no short window tells a pause from the end.

The numbers were chosen on validation faces (docs/predictor.md, "When a predict drag ends").
"""

from __future__ import annotations

import torch

from .session import StopReason
from .tracking import track_points

# A handle is lost when its best match is further from its template than this fraction of the
# template's spread (calibration: docs/predictor.md, "Lost handles").
LOST_RATIO = 1.0


def lost_handles(match: torch.Tensor, ratio: float | None) -> torch.Tensor:
    """bool [K]: the handles whose ``match`` [K] is above ``ratio`` (None: the rule is off)."""
    if ratio is None:
        return torch.zeros(match.shape, dtype=torch.bool, device=match.device)
    return match > ratio


def track_and_flag(
    feat,
    templates: torch.Tensor,
    spread: torch.Tensor,
    handles: torch.Tensor,
    lost: torch.Tensor,
    r2: int,
    ratio: float | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Point tracking with the lost rule, on the features' device and with no read-back.

    ``handles`` [K, 2] are the positions before this pass, ``lost`` bool [K] the handles lost
    so far. -> (handles [K, 2]: tracked, or kept where lost; match [K]; lost [K]: the old flags
    plus the handles whose match is above ``ratio`` now)."""
    tracked, best = track_points(feat, templates, handles, r2, return_distance=True)
    match = match_ratio(best, spread)
    lost = lost | lost_handles(match, ratio)
    return torch.where(lost[:, None], handles, tracked), match, lost


def arrival(dist: torch.Tensor, lost: torch.Tensor, stop_distance: float) -> StopReason | None:
    """The end by arrival, from the handle-to-target distances [K] and lost flags [K]: "reached"
    when every handle is within ``stop_distance`` and none is lost; "lost" when every handle is
    lost, or every handle not lost has arrived; None while a handle that is found is still away."""
    found = ~lost
    if not bool(found.any()):
        return "lost"
    if bool((dist[found] <= stop_distance + 1e-6).all()):
        return "lost" if bool(lost.any()) else "reached"
    return None


def match_ratio(best: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """Best-match distance [K] over the template's spread [K] (a flat template, spread 0, matches
    only itself: its ratio is 0 where found exactly and large otherwise)."""
    return best / spread.clamp(min=1e-6)


STALL_MEASURES = ("mean", "max")


class StallWatch:
    """The mean and the largest handle-to-target distance at each step since the points last
    changed, and the stall rule on one of them."""

    def __init__(self) -> None:
        self._records: dict[str, list[float]] = {m: [] for m in STALL_MEASURES}  # one per step each

    def reset(self) -> None:
        """The points changed: progress is counted afresh."""
        for r in self._records.values():
            r.clear()

    def add(self, dist: torch.Tensor) -> None:
        """Record one step's handle-to-target distances [K] (of the handles not lost)."""
        some = dist.numel() > 0
        self._records["mean"].append(float(dist.mean()) if some else 0.0)
        self._records["max"].append(float(dist.max()) if some else 0.0)

    def stalled(self, steps: int, px: float, measure: str = "mean") -> bool:
        """True when the last ``steps`` records of ``measure`` never went below the smallest
        record before them by more than ``px``. Needs ``steps`` + 1 records, so a drag gets at
        least that many steps; ``steps`` 0 turns the rule off."""
        rec = self._records[measure]
        if steps <= 0 or len(rec) <= steps:
            return False
        before, recent = min(rec[:-steps]), min(rec[-steps:])
        return before - recent <= px


def default_stop_distance(resolution: int, n_handles: int) -> float:
    """The paper's stop rule, for both modes: every handle within 1 px of its target for up to 5
    handles, 2 px otherwise, scaled by res / 512 above 512 px and never below that."""
    return (1.0 if n_handles <= 5 else 2.0) * max(1.0, resolution / 512)
