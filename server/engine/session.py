"""The interface every edit method implements, so the server can switch methods per room.

Two methods implement it: the DragGAN optimiser (``server.engine.drag.DragSession``) and the
learned latent predictor (Auto DragGAN, ``server.engine.predict_session.PredictSession``). The
worker only ever calls what is declared here: one ``step()`` per tick, ``render()`` for a frame
without stepping, and the setters when people move points, paint a mask or change a setting
mid-edit. When a session ends by itself its ``StopReason`` says why (``server.engine.stop_rules``).

Coordinates are image pixels ``(x, y)``: x to the right, y down, ``0 <= x <= W - 1`` and
``0 <= y <= H - 1``; pixel centres sit on integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

Point = tuple[float, float]  # (x, y) in image pixels
# reached: every handle within the stop distance; max_steps: the session's step cap; stalled: no
# handle got closer for a while (predictor); lost: a handle's feature is no longer found near it
StopReason = Literal["reached", "max_steps", "stalled", "lost"]


@dataclass(frozen=True, eq=False)
class StepResult:
    """What one step produced; ``frame`` and ``handles`` describe the same forward pass."""

    frame: np.ndarray  # uint8 [H, W, 3], the image of this step's forward pass
    handles: list[Point]  # handle positions tracked in ``frame``
    targets: list[Point]  # targets in force during this step
    step: int  # how many steps this session has taken, this one included (1 after the first)
    done: bool  # True once the session has ended by itself (``reason`` says why)
    reason: StopReason | None  # why it is done; None while running
    loss: float  # the objective of this step (0.0 for methods without one)
    seconds: float  # wall time of the step (of the whole batch when stepped in a batch)
    # per handle: best-match feature distance / the template's spread at placement
    # (``stop_rules.LostRule``; 0.0 where not measured) and whether that handle is lost
    match: tuple[float, ...] = ()
    lost: tuple[bool, ...] = ()


@runtime_checkable
class EditSession(Protocol):
    """One drag edit of one image: start latent, points, optional mask; advanced step by step."""

    @property
    def handles(self) -> list[Point]:
        """Current (tracked) handle positions."""
        ...

    @property
    def targets(self) -> list[Point]: ...

    @property
    def step_index(self) -> int:
        """Steps taken so far (``step`` is the method that takes one)."""
        ...

    @property
    def done(self) -> bool: ...

    def step(self) -> StepResult:
        """Advance the edit by one step; a session that is done returns its last result again."""
        ...

    def render(self) -> np.ndarray:
        """The image of the current latent, uint8 [H, W, 3], without stepping."""
        ...

    def latent(self) -> torch.Tensor:
        """The current W+ latent, detached, on the CPU: [1, num_ws, w_dim] float32."""
        ...

    def set_points(self, handles: Sequence[Sequence[float]], targets: Sequence[Sequence[float]]) -> None:
        """Replace the points between steps (people move points mid-drag)."""
        ...

    def set_mask(self, mask: np.ndarray | torch.Tensor | None) -> None:
        """Set the flexible-area mask (bool [H, W], True = may move), or None for no mask."""
        ...

    def set_options(self, **changes: Any) -> None:
        """Change live settings (learning rate, budget, ...); raises ValueError for unknown ones."""
        ...
