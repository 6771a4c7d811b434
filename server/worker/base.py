"""The worker's shared part: its state per device and per room, the helpers every kind of job
uses, and what a failed job does to its room (a drag commits what it reached, a projection
commits nothing).

:class:`WorkerBase` holds the state; each kind of job adds its methods (``drags.py``,
``projections.py``, ``renders.py``) and :class:`~server.worker.loop.Worker` the tick loop. Methods
named ``_...`` run on the engine thread unless they say otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Protocol

import numpy as np
import torch

from server.core.jobs import EngineJob, JobKind
from server.core.outgoing import Outgoing
from server.core.room import Room
from server.core.state import ImageInfo
from server.engine.generator import Generator
from server.engine.media import encode_jpeg
from server.storage.manager import RoomManager
from server.worker.latents import Latents
from server.worker.media import Trajectory
from server.worker.models import LoadedModel, ModelPool, ModelSpec
from server.worker.modes import EngineMode, default_modes
from server.worker.projector import Projector
from server.worker.pti import TunedCopies
from server.worker.state import EngineError, Outcome, ProjectionState, RoomEngine, WorkerStats

log = logging.getLogger(__name__)


class Dispatcher(Protocol):
    """Where the worker sends the messages of a room (the edge's fan-out, ``Hub``)."""

    def dispatch(self, room: Room, outs: list[Outgoing]) -> None: ...


class WorkerBase:
    """The state the kinds of job share and their common helpers (the Worker's constructor).

    The models: ``pool`` (a :class:`~server.worker.models.ModelPool` whose default model is
    loaded), or else one model built from ``G``, ``model_name``, ``modes`` and ``projector``.
    ``G``, ``modes``, ``projector`` and ``resolution`` name the default model's."""

    def __init__(
        self,
        G: Generator | None,
        manager: RoomManager,
        hub: Dispatcher,
        *,
        model_name: str = "",
        max_fps: float = 30.0,
        tick_budget_s: float = 0.25,
        jpeg_quality: int = 85,
        trajectory_frames: int = 120,
        modes: dict[str, EngineMode] | None = None,
        projector: Projector | None = None,
        pti_steps: int = 0,
        pti_max_rooms: int = 4,
        checkpoint_s: float | None = 2.0,
        pool: ModelPool | None = None,
    ) -> None:
        if pti_steps < 0 or pti_max_rooms < 1:
            raise ValueError(
                f"pti_steps must be >= 0 and pti_max_rooms >= 1, got {pti_steps} and {pti_max_rooms}"
            )
        if pool is None:
            if G is None:
                raise ValueError("give the worker a generator or a model pool")
            spec = ModelSpec(model_name or G.cfg.name or "generator", int(G.img_resolution), default=True)
            pool = ModelPool(
                LoadedModel(
                    spec,
                    G,
                    default_modes() if modes is None else dict(modes),
                    projector if projector is not None else Projector(G),
                    Latents(G, spec.name, manager.store),
                )
            )
        self.models = pool
        pool.in_use = self.models_in_use
        pool.on_ready = lambda _name: self.wake()
        self.pti_steps = pti_steps
        self.pti_max_rooms = pti_max_rooms
        self.manager = manager
        self.hub = hub
        self.device = self.G.mapping.w_avg.device
        self.min_interval = 1.0 / max_fps
        self.tick_budget_s = tick_budget_s
        self.jpeg_quality = jpeg_quality
        self.trajectory_frames = trajectory_frames
        self.checkpoint_s = checkpoint_s  # a running drag stores its frame's latent this often (None: never)
        self.stats = WorkerStats()
        self._rooms: dict[str, RoomEngine] = {}  # worker thread only
        self._trajectories: dict[str, Trajectory] = {}  # worker thread only
        self._projections: dict[str, ProjectionState] = {}  # worker thread only
        self._tuned = TunedCopies()  # worker thread only
        self._cost: dict[tuple[str, str], float] = {}  # (kind, mode) -> seconds per job (EMA)
        self._served: dict[str, int] = {}  # room -> tick it was last served
        self._started: dict[tuple[str, int], float] = {}  # (room, drag) -> loop time of first frame
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="livedrag-engine")
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.warm = False  # the warm-up step has run (healthz reports it)

    # --- the models ------------------------------------------------------------------------------

    @property
    def default_model(self) -> LoadedModel:
        return self.models.get(self.models.default)

    @property
    def G(self) -> Generator:
        """The default model's generator."""
        return self.default_model.G

    @property
    def model_name(self) -> str:
        return self.models.default

    @property
    def modes(self) -> dict[str, EngineMode]:
        """The default model's engine modes."""
        return self.default_model.modes

    @property
    def projector(self) -> Projector:
        return self.default_model.projector

    @property
    def resolution(self) -> int:
        return self.default_model.resolution

    @property
    def _latents(self) -> Latents:
        return self.default_model.latents

    @property
    def available_modes(self) -> list[str]:
        """The default model's modes."""
        return sorted(self.modes)

    def models_in_use(self) -> set[str]:
        """The models of the live rooms (event loop)."""
        return {room.image.model for room in list(self.manager.rooms.values())}

    def _model(self, image: ImageInfo) -> LoadedModel:
        """The loaded model of an image (engine thread); EngineError when it is not loaded."""
        return self.models.get(image.model)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the engine thread (between ticks)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def tuned_generator(self, room: str, latent: str) -> Generator | None:
        """The room's tuned generator for a latent key (None: that image uses the shared one)."""
        return self._tuned.get(room, latent)

    @property
    def tuned_rooms(self) -> set[str]:
        """Rooms holding a tuned generator copy or tuning one now (what ``pti_max_rooms`` caps)."""
        return self._tuned.rooms | {r for r, ps in self._projections.items() if ps.pti}

    # --- engine thread ---------------------------------------------------------------------------

    def _state(self, room_id: str) -> RoomEngine:
        st = self._rooms.get(room_id)
        if st is None:
            st = self._rooms[room_id] = RoomEngine()
        return st

    def _room_ws(self, st: RoomEngine, image: ImageInfo) -> torch.Tensor:
        if st.image != image or st.ws is None:
            st.ws, st.image = self._model(image).latents.image_ws(image), image
        return st.ws

    def _generator(self, room: str, image: ImageInfo) -> Generator:
        """The generator of a room's image: the room's tuned copy for a latent key it holds one
        for, else its model's."""
        if image.latent is not None:
            tuned = self._tuned.get(room, image.latent)
            if tuned is not None:
                return tuned
        return self._model(image).G

    def _guard(self, job: EngineJob, fn: Callable[[EngineJob], Outcome]) -> Outcome:
        try:
            return fn(job)
        except Exception as e:
            return self._failed(job, e)

    def _failed(self, job: EngineJob, e: BaseException) -> Outcome:
        if not isinstance(e, (EngineError, ValueError)):
            log.error("room %s: %s job failed", job.room, job.kind.value, exc_info=e)
        message = str(e) if isinstance(e, (EngineError, ValueError)) else f"{type(e).__name__}: {e}"
        st = self._rooms.get(job.room)
        latent, storage_failed, steps = None, False, 0
        if job.task is not None:  # a failed projection commits nothing
            ps = self._projections.pop(job.room, None)
            steps = ps.steps if ps is not None else 0
        elif job.kind is not JobKind.RENDER and st is not None and st.drag == job.drag:
            steps = st.steps
            try:
                latent, storage_failed = self._commit_latent(st, job.room)
            except Exception:  # the latent itself is bad: commit nothing
                latent = None
            self._end_session(st)
        return Outcome(job, error=message[:400], latent=latent, storage_failed=storage_failed, steps=steps)

    def _commit_latent(self, st: RoomEngine, room: str) -> tuple[str | None, bool]:
        """Store the latent of the drag's last frame; (key, storage failed). None: unchanged image
        (no step, or only the first, whose frame is the start image). A drag that ran on the
        room's tuned generator maps the new key to it too."""
        if st.frame_latent is None or st.steps <= 1 or st.image is None:
            return None, False
        key, failed = self._model(st.image).latents.put(st.frame_latent)
        self._tuned.follow(room, key, st.generator)
        if st.image is not None:  # the room's next image: keep its W+ at hand
            st.image, st.ws = replace(st.image, latent=key), st.frame_latent.to(self.device)
        return key, failed

    def _end_session(self, st: RoomEngine) -> None:
        st.session, st.frame_latent, st.steps, st.drag, st.generator = None, None, 0, -1, None
        st.pair_ids, st.pair_sig, st.mask, st.params = (), (), None, None
        st.last_frame_at = st.fps = None
        st.checkpoint_at = 0.0

    def _jpeg(self, frame: np.ndarray) -> bytes:
        return encode_jpeg(frame, self.jpeg_quality)

    @staticmethod
    def _clock() -> tuple[float, float]:
        return time.perf_counter(), time.thread_time()

    def _measure(self, key: tuple[str, str], since: tuple[float, float], n: int) -> None:
        """Update the running cost per job. On the CPU the cost is the work done (this thread's
        CPU time times the intra-op threads, capped by the wall time), so that a machine busy
        with other processes does not make the worker stop batching; on CUDA it is wall time."""
        wall = time.perf_counter() - since[0]
        if self.device.type == "cpu":
            wall = min(wall, (time.thread_time() - since[1]) * torch.get_num_threads())
        per = wall / max(1, n)
        old = self._cost.get(key)
        self._cost[key] = per if old is None else 0.7 * old + 0.3 * per
