"""What the worker gets from a room (EngineJob) and gives back (FrameResult); no torch here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from server.core.mask import MaskGrid
from server.core.state import ImageInfo, Pair, Params, Point, Task


class JobKind(StrEnum):
    RENDER = "render"  # render the current image (after new_image, undo, redo, a restart)
    STEP = "step"  # advance the running drag by one step
    PROJECT = "project"  # advance the running projection (``EngineJob.task``) by one step
    FINISH = "finish"  # end the drag or projection: save the latent, then call on_finished


@dataclass(frozen=True)
class EngineJob:
    """A consistent copy of one room's edit state for one tick of the worker."""

    room: str  # room id
    kind: JobKind
    drag: int  # run number (drags and projections): a new number means a fresh session from ``image``
    step: int  # steps this drag has taken so far
    version: int  # room version of this state
    image_rev: int  # changes whenever the image changes
    image: ImageInfo  # seed or latent key (bytes: store.get_latent(image.latent))
    pairs: tuple[Pair, ...]  # a changed Pair.handle_rev: an editor placed that handle anew
    mask: MaskGrid  # mask.fixed_region(H, W) -> [H, W] bool array (True: keep fixed) or None
    params: Params
    reason: str | None = None  # FINISH: reached | converged | max_steps | stalled | lost | stopped | error
    task: Task | None = None  # PROJECT, and FINISH of a projection: what it projects toward


@dataclass(frozen=True)
class FrameResult:
    """What the worker reports after a RENDER or STEP job."""

    jpeg: bytes  # the frame, encoded once
    handles: Mapping[str, Point] | None = None  # STEP: tracked handle per pair id
    reached: bool = False  # STEP: every handle is within the stop distance of its target
    fps: float | None = None  # optional: the room's recent steps per second
    psnr: float | None = None  # PROJECT: PSNR of the frame to the target (dB)
    loss: float | None = None  # PROJECT: the objective after the step
    done: str | None = None  # the session ended by itself: PROJECT "converged" or "max_steps"; STEP
    # "stalled", "lost" (or "max_steps", a mode with a step cap of its own); "reached" is ``reached``
    checkpoint: str | None = None  # STEP: this frame's latent is stored under this key (crash recovery)
    lost: tuple[str, ...] = ()  # STEP: pair ids whose handle's feature is no longer found near it
