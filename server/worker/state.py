"""What the worker keeps: per room (its image's W+, its drag session, its projection), per job
(the outcome the engine thread hands back to the event loop) and per device (counters)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from server.core.jobs import EngineJob, FrameResult
from server.core.mask import MaskGrid
from server.core.state import ImageInfo, Params
from server.engine.generator import Generator
from server.engine.session import EditSession
from server.worker.projector import ProjectionSession


class EngineError(Exception):
    """A room's job cannot run (unknown mode, missing latent, wrong model); the message is shown."""


@dataclass
class RoomEngine:
    """What the worker keeps per room (touched only by the worker thread)."""

    image: ImageInfo | None = None  # the image ``ws`` belongs to
    ws: torch.Tensor | None = None  # its W+ on the device
    session: EditSession | None = None
    mode: str = ""
    drag: int = -1  # drag number of ``session``
    pair_ids: tuple[str, ...] = ()
    pair_sig: tuple = ()  # (id, handle_rev, target) per pair last given to the session
    mask: MaskGrid | None = None
    params: Params | None = None
    frame_latent: torch.Tensor | None = None  # CPU W+ of the last frame of this drag
    generator: Generator | None = None  # the generator ``session`` runs on (shared or the room's tuned)
    steps: int = 0
    started: float = 0.0  # perf_counter at the first step
    last_frame_at: float | None = None
    fps: float | None = None
    checkpoint_at: float = 0.0  # perf_counter of the drag's last stored checkpoint


@dataclass
class ProjectionState:
    """A room's running projection (worker thread only)."""

    run: int  # the room's run number (EngineJob.drag)
    session: ProjectionSession
    steps: int = 0
    latent: torch.Tensor | None = None  # CPU W+ of the last frame
    pti: bool = False  # the session ends with pivotal tuning of its own generator copy
    model: str = ""  # the model it runs on (projections of different models never share a batch)


@dataclass
class Outcome:
    """One job's result, computed in the thread, applied on the loop."""

    job: EngineJob
    frame: FrameResult | None = None
    latent: str | None = None  # FINISH / error: key of the committed latent
    error: str | None = None
    storage_failed: bool = False
    steps: int = 0
    seconds: float = 0.0


@dataclass
class WorkerStats:
    ticks: int = 0
    steps: int = 0
    renders: int = 0
    errors: int = 0
    busy_s: float = 0.0  # wall time spent computing in the engine thread
    cpu_s: float = 0.0  # CPU time of the engine thread while computing (its own, not the process's)
