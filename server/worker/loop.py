"""The worker: owns the generator and its device, and advances every running room by one step per tick.

Threads. All model work (sessions, forward passes, JPEG encoding, latent serialisation) runs in
one dedicated thread (a single-thread executor); the event loop never waits on the device. The
rooms stay on the event loop (they are not thread-safe): each tick the loop takes an immutable
:class:`~server.core.room.EngineJob` per room that wants work, hands the batch to the thread, and
applies the results (``on_frame`` / ``on_finished`` / ``on_error``) back on the loop, which then
gives each frame message to the room's connections (:class:`~server.edge.fanout.Hub`).

A tick:

1. ``manager.engine_jobs()``: STEP (a running drag), FINISH (a drag to commit) and RENDER (a
   new image, undo/redo, first look after a restart; rooms nobody is in are rendered when
   someone joins);
2. selection: every FINISH (cheap), then STEP and RENDER jobs in round-robin order (the room
   served longest ago first) while the estimated cost stays within ``tick_budget_s``; at least
   one job always runs, so a slow room (many points, a slow mode) takes a tick to itself and
   then waits its turn: it cannot starve the others. Costs are running averages measured per
   job kind and mode;
3. compute, in the thread: rooms that share a mode are stepped in one batched forward/backward
   pass (``EngineMode.step_many``; DragGAN's ``step_batch``); renders are batched into one
   forward pass. If a batch raises, each of its rooms is retried alone, so a failure reaches
   only the room that caused it (``on_error``: its drag ends with reason ``error`` and commits
   what it had reached) and the other rooms keep running;
4. each frame is JPEG-encoded once; the room wraps it in one frame message whose msgpack bytes
   are packed once and shared by all its connections;
5. ticks start at most ``max_fps`` times a second.

Latents. Each room's current W+ is cached here (on the device) next to its session. A drag's
result is the latent of its last frame (so what people saw is what is committed); it is
serialised (safetensors, ``{"w_plus": [1, num_ws, w_dim]}``), put in the store (content key:
sha256 of the bytes) and the room references it by that key. If the store fails, the bytes
stay in an in-memory cache, the key is still committed and the room's members get
``storage_failed``.

Modes. An engine mode is a registry entry, :class:`EngineMode` (mode name -> session factory,
batched step, live options). ``optimize`` (DragGAN) is always there. ``predict`` (Auto DragGAN's
latent predictor, ``server.engine.predict_session``) is registered when a predictor bundle that
fits the loaded generator is available (:func:`default_modes`; the app loads the shipped one or
``--predictor``). Without one, a drag started in ``predict`` mode ends at once with reason
``error`` and the message "predictor not available for this model", and ``GET /api/info`` lists
only the available modes. A room's mode is read when its drag starts; a ``set_params`` mode
change during a drag applies to the next drag.

Projections (real images). PROJECT jobs (a room projecting an upload or a blend) are stepped
like drags: one optimisation step per tick, all projecting rooms in one batched pass
(:meth:`~server.worker.projector.Projector.step_many`), each frame streamed with its PSNR and loss.
The session is created from the room's :class:`~server.core.state.Task` (the target PNG from the
store, the current latent for a blend); the FINISH job commits the latent of the last frame.
A failed projection commits nothing (the room shows its image again).

Pivotal tuning (``pti_steps > 0``). An upload projected with method ``optimize`` is followed by
``pti_steps`` pivotal tuning steps of a private copy of the generator (ordinary ticks of the same
session), while fewer than ``pti_max_rooms`` rooms hold a tuned copy (beyond, it projects without
and says so in the log). Its commit keeps the tuned copy for that room, keyed by the committed
latent key; every render, drag, PNG export and trajectory frame of that room's image with that key
uses it, and a drag committed from such an image maps its new key to the same copy (so undo/redo
in the chain render right). Other images (undo to before the upload) use the shared generator.
A room keeps one tuned copy (a later tuned upload replaces it); it is dropped when the room is
deleted. Tuned copies live in memory only: after a restart the room renders with the shared
generator, and the latent download stays the latent alone.

Shutdown (:meth:`Worker.stop`): the current tick completes, every running drag is stopped and
committed (FINISH with reason ``stopped``), then the thread ends. A running projection is
abandoned (the room stays on its last committed image; the upload stays stored).
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from server.core.ids import latent_key
from server.core.jobs import EngineJob, FrameResult, JobKind
from server.core.mask import MaskGrid
from server.core.outgoing import Outgoing
from server.core.protocol import error_message
from server.core.room import Room
from server.core.state import ImageInfo, Params, Status, Task, TaskKind
from server.edge.fanout import Hub
from server.engine import latent_io
from server.engine.generator import Generator, to_uint8
from server.engine.latent_io import latent_to_bytes
from server.engine.media import decode_image, draw_points, encode_jpeg, encode_png
from server.engine.session import EditSession, Point, StepResult
from server.storage.manager import RoomManager
from server.storage.store import StoreError
from server.worker.projector import BlendSource, ProjectionError, ProjectionSession, Projector

log = logging.getLogger(__name__)

SESSION_STEP_CAP = 1_000_000  # optimize: the room enforces params.max_steps; sessions never stop on their own
LATENT_CACHE = 64  # serialised latents kept in memory (undo/redo without a store read)


class EngineError(Exception):
    """A room's job cannot run (unknown mode, missing latent, wrong model); the message is shown."""


# --- modes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionSpec:
    """Everything a mode needs to start one room's drag."""

    room: str
    G: Generator
    w_plus: torch.Tensor  # [1, num_ws, w_dim] on the model's device
    handles: list[Point]
    targets: list[Point]
    mask: np.ndarray | None  # bool [H, W], True = flexible (may move); None: no mask term
    params: Params


def step_each(sessions: Sequence[EditSession]) -> list[StepResult]:
    """A mode without batching: one ``step()`` per session."""
    return [s.step() for s in sessions]


@dataclass(frozen=True)
class EngineMode:
    """One edit method: how to start a session, how to step several at once, how to change settings."""

    name: str
    create: Callable[[SessionSpec], EditSession]
    step_many: Callable[[Sequence[EditSession]], list[StepResult]] = step_each
    options: Callable[[Params, int], dict[str, Any]] | None = None  # live options for set_options


def drag_options(params: Params, resolution: int) -> dict[str, Any]:
    """Room parameters -> DragOptions fields. The room's r1/r2 are image pixels (DragOptions
    counts them at 512 px); null keeps DragOptions' resolution-scaled defaults."""
    from server.engine.drag import DragOptions

    d = DragOptions()
    opts: dict[str, Any] = {
        "lr": params.lr,
        "lambda_mask": params.lam,
        "max_steps": SESSION_STEP_CAP,
        "stop_distance": params.stop_dist,
        "r1": d.r1 if params.r1 is None else params.r1 * 512 / resolution,
        "r1_min": d.r1_min if params.r1 is None else 1,
        "r2": d.r2 if params.r2 is None else params.r2 * 512 / resolution,
        "r2_min": d.r2_min if params.r2 is None else 1,
    }
    return opts


def _create_drag(spec: SessionSpec) -> EditSession:
    from server.engine.drag import DragOptions, DragSession

    options = DragOptions(**drag_options(spec.params, spec.G.img_resolution))
    return DragSession(spec.G, spec.w_plus, spec.handles, spec.targets, mask=spec.mask, options=options)


def _step_drag(sessions: Sequence[EditSession]) -> list[StepResult]:
    from server.engine.drag import step_batch

    return step_batch(sessions)  # type: ignore[arg-type]


def predict_mode(bundle: Any) -> EngineMode:
    """Auto DragGAN's predictor mode for a loaded ``PredictorBundle`` (``load_predictor(..., G=G)``).
    The predictor's recommended options apply, its step budget included (a session that spends it
    ends the drag with reason ``max_steps``); the room's ``stop_dist`` and ``r2`` override them
    (``lr``, ``lambda`` and ``r1`` are optimiser settings and do not apply)."""
    from server.engine.predict_session import PredictOptions, PredictSession, predict_step_batch

    base = PredictOptions.recommended(bundle)

    def options(params: Params, resolution: int) -> dict[str, Any]:
        return {
            # the predictor's own budget (its file's recommendation; longer chains drift off the
            # image manifold), restarted whenever points change; the room's cap still applies
            "max_steps": base.max_steps,
            "stop_distance": params.stop_dist,
            "r2": base.r2 if params.r2 is None else params.r2 * 512 / resolution,
            "r2_min": base.r2_min if params.r2 is None else 1,
        }

    def create(spec: SessionSpec) -> EditSession:
        opts = PredictOptions.recommended(bundle, **options(spec.params, spec.G.img_resolution))
        return PredictSession(
            spec.G, spec.w_plus, spec.handles, spec.targets, mask=spec.mask, options=opts, model=bundle
        )

    return EngineMode("predict", create, predict_step_batch, options)  # type: ignore[arg-type]


def default_modes(predictor: Any | None = None) -> dict[str, EngineMode]:
    """The engine modes: ``optimize`` always; ``predict`` when a predictor bundle for the loaded
    generator is given (the app loads the shipped one, or ``--predictor``, at start-up)."""
    modes = {"optimize": EngineMode("optimize", _create_drag, _step_drag, drag_options)}
    if predictor is not None:
        modes["predict"] = predict_mode(predictor)
    return modes


# --- latents -------------------------------------------------------------------------------------


def latent_from_bytes(data: bytes, num_ws: int, w_dim: int) -> torch.Tensor:
    """Stored latent bytes -> W+ [1, num_ws, w_dim] float32 on the CPU (``latent_io``'s checks;
    a bad one is an EngineError: the room's job fails with the message)."""
    try:
        return latent_io.latent_from_bytes(data, num_ws, w_dim)
    except latent_io.LatentError as e:
        raise EngineError(f"stored {e}") from None


def step_isolated(
    step_many: Callable[[Sequence[Any]], list[StepResult]], sessions: Sequence[Any]
) -> list[StepResult | BaseException]:
    """One batched step of ``sessions``; when the batch fails, each session alone, so one room's
    failure does not stop the others. -> a StepResult or the exception, per session."""
    try:
        return list(step_many(sessions))
    except Exception:
        results: list[StepResult | BaseException] = []
        for s in sessions:
            try:
                results.append(step_many([s])[0])
            except Exception as e:
                results.append(e)
        return results


# --- per-room engine state -----------------------------------------------------------------------


@dataclass
class TrajectoryItem:
    jpeg: bytes
    handles: list[Point]
    targets: list[Point]


@dataclass
class Trajectory:
    """Frames of one drag for trajectory.gif: at most ``cap`` items; past that every other item is
    dropped and only every ``stride``-th frame is kept, so the GIF spans the whole drag."""

    cap: int
    drag: int = -1
    items: list[TrajectoryItem] = field(default_factory=list)
    last: TrajectoryItem | None = None
    stride: int = 1
    seen: int = 0

    def reset(self, drag: int) -> None:
        self.drag, self.items, self.last, self.stride, self.seen = drag, [], None, 1, 0

    def add(self, item: TrajectoryItem) -> None:
        self.last = item
        if self.seen % self.stride == 0:
            self.items.append(item)
            if len(self.items) > self.cap:
                self.items = self.items[::2]
                self.stride *= 2
        self.seen += 1

    def frames(self) -> list[TrajectoryItem]:
        out = list(self.items)
        if self.last is not None and (not out or out[-1] is not self.last):
            out.append(self.last)
        return out


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


@dataclass
class ProjectionState:
    """A room's running projection (worker thread only)."""

    run: int  # the room's run number (EngineJob.drag)
    session: ProjectionSession
    steps: int = 0
    latent: torch.Tensor | None = None  # CPU W+ of the last frame
    pti: bool = False  # the session ends with pivotal tuning of its own generator copy


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


class Worker:
    """One per device. Create it on the event loop, then ``start()``; ``await stop()`` at shutdown."""

    def __init__(
        self,
        G: Generator,
        manager: RoomManager,
        hub: Hub,
        *,
        model_name: str,
        max_fps: float = 30.0,
        tick_budget_s: float = 0.25,
        jpeg_quality: int = 85,
        trajectory_frames: int = 120,
        modes: dict[str, EngineMode] | None = None,
        projector: Projector | None = None,
        pti_steps: int = 0,
        pti_max_rooms: int = 4,
    ) -> None:
        if pti_steps < 0 or pti_max_rooms < 1:
            raise ValueError(
                f"pti_steps must be >= 0 and pti_max_rooms >= 1, got {pti_steps} and {pti_max_rooms}"
            )
        self.G = G
        self.pti_steps = pti_steps
        self.pti_max_rooms = pti_max_rooms
        self.projector = projector if projector is not None else Projector(G)
        self.manager = manager
        self.hub = hub
        self.model_name = model_name
        self.device = G.mapping.w_avg.device
        self.resolution = int(G.img_resolution)
        self.min_interval = 1.0 / max_fps
        self.tick_budget_s = tick_budget_s
        self.jpeg_quality = jpeg_quality
        self.trajectory_frames = trajectory_frames
        self.modes = default_modes() if modes is None else dict(modes)
        self.stats = WorkerStats()
        self._rooms: dict[str, RoomEngine] = {}  # worker thread only
        self._trajectories: dict[str, Trajectory] = {}  # worker thread only
        self._latents: OrderedDict[str, bytes] = OrderedDict()  # worker thread only
        self._projections: dict[str, ProjectionState] = {}  # worker thread only
        self._tuned: dict[str, dict[str, Generator]] = {}  # room -> latent key -> tuned G (worker thread)
        self._cost: dict[tuple[str, str], float] = {}  # (kind, mode) -> seconds per job (EMA)
        self._served: dict[str, int] = {}  # room -> tick it was last served
        self._started: dict[tuple[str, int], float] = {}  # (room, drag) -> loop time of first frame
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="livedrag-engine")
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.warm = False  # the warm-up step has run (healthz reports it)

    @property
    def available_modes(self) -> list[str]:
        return sorted(self.modes)

    # --- loop side ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._executor.submit(self._warm_up)  # runs before the first tick's work
            self._task = asyncio.get_running_loop().create_task(self._run(), name="livedrag worker")

    def _warm_up(self) -> None:
        """One throw-away step per mode: the first optimiser pulls in seconds of lazy imports
        (torch._dynamo), which should not land on the first person's drag."""
        t0 = time.perf_counter()
        res = self.resolution
        for mode in self.modes.values():
            try:
                with torch.no_grad():
                    ws = self.G.ws_from_seed(0)
                spec = SessionSpec("", self.G, ws, [(res / 4, res / 4)], [(res / 2, res / 2)], None, Params())
                mode.step_many([mode.create(spec)])
            except Exception as e:  # a broken mode shows up in the first real drag, with its message
                log.warning("warm-up of mode %s failed: %s", mode.name, e)
        self.warm = True
        log.debug("engine warm-up took %.2f s", time.perf_counter() - t0)

    def wake(self) -> None:
        """Something may have changed (a message, a join): look for work now."""
        self._wake.set()

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the engine thread (between ticks)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def stop(self, commit: bool = True) -> None:
        """Finish the current tick, commit every running drag (``commit``), stop the thread."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if commit:
            for room in self.manager.rooms.values():
                if room.status is Status.RUNNING:
                    request_stop(room)
            jobs = [j for j in self.manager.engine_jobs() if j.kind is JobKind.FINISH]
            if jobs:
                log.info("committing %d running drag(s) before shutdown", len(jobs))
                self._apply(await self.call(self._compute, jobs))
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            jobs = self._collect()
            if not jobs:
                self._wake.clear()
                if not self._collect():  # re-check after clearing: no lost wake-up
                    await self._wake.wait()
                continue
            chosen = self._select(jobs)
            live = frozenset(self.manager.rooms)
            t0 = time.perf_counter()
            try:
                outcomes = await loop.run_in_executor(self._executor, self._compute, chosen, live)
            except Exception as e:  # a bug in the worker itself: fail these jobs, keep ticking
                log.exception("engine tick failed")
                outcomes = [Outcome(j, error=f"internal engine failure: {type(e).__name__}") for j in chosen]
            self.stats.ticks += 1
            self._apply(outcomes)
            wait = self.min_interval - (time.perf_counter() - t0)
            if wait > 0:
                await asyncio.sleep(wait)

    def _collect(self) -> list[EngineJob]:
        jobs = []
        for job in self.manager.engine_jobs():
            if job.kind is JobKind.RENDER:
                room = self.manager.get(job.room)
                if room is None or not room.members:
                    continue  # nobody looks: render when someone joins
            jobs.append(job)
        return jobs

    def _select(self, jobs: list[EngineJob]) -> list[EngineJob]:
        """Every FINISH, then STEP/RENDER jobs round-robin within the tick's time budget."""
        chosen = [j for j in jobs if j.kind is JobKind.FINISH]
        work = sorted(
            (j for j in jobs if j.kind is not JobKind.FINISH), key=lambda j: self._served.get(j.room, -1)
        )
        taken, estimate = 0, 0.0
        for job in work:
            cost = self._estimate(job)
            if taken and estimate + cost > self.tick_budget_s:
                continue
            chosen.append(job)
            taken += 1
            estimate += cost
            self._served[job.room] = self.stats.ticks
        if len(self._served) > 2 * len(self.manager.rooms) + 16:  # forget deleted rooms
            self._served = {r: t for r, t in self._served.items() if r in self.manager.rooms}
        return chosen

    def _estimate(self, job: EngineJob) -> float:
        key = (job.kind.value, job.params.mode if job.kind is JobKind.STEP else "")
        return self._cost.get(key, 0.0)

    def _apply(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            job = o.job
            room = self.manager.get(job.room)
            if room is None:
                continue
            if o.error is not None:
                self.stats.errors += 1
                out = self.manager.on_error(job, o.error, o.latent)
                if job.kind is not JobKind.RENDER:
                    self._log_end(room, job, o, "error")
            elif job.kind is JobKind.FINISH:
                out = self.manager.on_finished(job, o.latent)
                if out:
                    self._log_end(room, job, o, job.reason or "stopped")
            else:
                assert o.frame is not None
                if job.kind is JobKind.STEP and job.step == 0 and (job.room, job.drag) not in self._started:
                    self._started[(job.room, job.drag)] = time.perf_counter()
                    log.info(
                        "room %s: drag %d started (%s, %d pairs, %d editors, %d spectators)",
                        room.id,
                        job.drag,
                        job.params.mode,
                        len(job.pairs),
                        len(room.editors),
                        room.spectators,
                    )
                out = self.manager.on_frame(job, o.frame)
            if o.storage_failed:
                out.append(Outgoing(error_message("storage_failed")))
            if out:
                self.hub.dispatch(room, out)

    def _log_end(self, room: Room, job: EngineJob, o: Outcome, reason: str) -> None:
        t0 = self._started.pop((job.room, job.drag), None)
        seconds = time.perf_counter() - t0 if t0 is not None else 0.0
        rate = f", {o.steps / seconds:.1f} steps/s" if seconds > 0 and o.steps else ""
        extra = f": {o.error}" if o.error else ""
        log.info(
            "room %s: drag %d finished (%s) after %d steps in %.2f s%s%s",
            room.id,
            job.drag,
            reason,
            o.steps,
            seconds,
            rate,
            extra,
        )

    # --- downloads (engine thread) --------------------------------------------------------------

    async def image_png(self, image: ImageInfo, room: str | None = None) -> bytes:
        """The committed image as PNG (rendered at full quality, not the streamed JPEG), with the
        room's tuned generator when ``room`` holds one for this image."""
        return await self.call(self._png, image, room)

    async def latent_bytes(self, image: ImageInfo) -> bytes:
        """The committed image's W+ as safetensors bytes."""
        return await self.call(self._latent_file, image)

    async def trajectory(self, room_id: str) -> list[TrajectoryItem]:
        """The frames of the room's last (or current) drag, oldest first (empty: none yet)."""
        return await self.call(self._trajectory_items, room_id)

    def _png(self, image: ImageInfo, room: str | None = None) -> bytes:
        G = self.G if room is None else self._generator(room, image)
        with torch.no_grad():
            img, _ = G.synthesis(self._image_ws(image), noise_mode="const")
        return encode_png(_frames(img)[0])

    def _latent_file(self, image: ImageInfo) -> bytes:
        if image.latent is not None:
            data = self._latent_data(image.latent)
            if data is not None:
                return data
        return latent_to_bytes(self._image_ws(image), self.model_name)

    def _trajectory_items(self, room_id: str) -> list[TrajectoryItem]:
        t = self._trajectories.get(room_id)
        return [] if t is None else t.frames()

    # --- engine thread ---------------------------------------------------------------------------

    def _compute(self, jobs: list[EngineJob], live: frozenset[str] | None = None) -> list[Outcome]:
        t0, c0 = time.perf_counter(), time.thread_time()
        if live is not None:  # forget rooms that no longer exist
            for gone in set(self._rooms) - live:
                self._rooms.pop(gone, None)
            for gone in set(self._trajectories) - live:
                self._trajectories.pop(gone, None)
            for gone in set(self._projections) - live:
                self._projections.pop(gone, None)
            for gone in set(self._tuned) - live:  # a deleted room's tuned generator goes with it
                self._tuned.pop(gone, None)
        outcomes: list[Outcome] = []
        for job in jobs:
            if job.kind is JobKind.FINISH:
                finish = self._finish_projection if job.task is not None else self._finish
                outcomes.append(self._guard(job, finish))
        outcomes += self._render_all([j for j in jobs if j.kind is JobKind.RENDER])
        outcomes += self._step_all([j for j in jobs if j.kind is JobKind.STEP])
        outcomes += self._project_all([j for j in jobs if j.kind is JobKind.PROJECT])
        self.stats.busy_s += time.perf_counter() - t0
        self.stats.cpu_s += time.thread_time() - c0
        return outcomes

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

    def _state(self, room_id: str) -> RoomEngine:
        st = self._rooms.get(room_id)
        if st is None:
            st = self._rooms[room_id] = RoomEngine()
        return st

    def _image_ws(self, image: ImageInfo) -> torch.Tensor:
        """W+ [1, num_ws, w_dim] on the device for an image (seed or committed latent)."""
        G = self.G
        if image.model != self.model_name or (image.w, image.h) != (self.resolution, self.resolution):
            raise EngineError(
                f"this room's image comes from model {image.model!r} ({image.w}x{image.h}); "
                f"this server runs {self.model_name!r} ({self.resolution}x{self.resolution})"
            )
        if image.latent is None:
            if image.seed is None:
                raise EngineError("the image has neither a seed nor a latent")
            with torch.no_grad():
                return G.ws_from_seed(image.seed, truncation_psi=image.truncation)
        data = self._latent_data(image.latent)
        if data is None:
            raise EngineError(f"latent {image.latent[:12]}... is missing from the store")
        return latent_from_bytes(data, G.num_ws, G.w_dim).to(self.device)

    def _generator(self, room: str, image: ImageInfo) -> Generator:
        """The generator of a room's image: the room's tuned copy for a latent key it holds one
        for, else the shared one."""
        if image.latent is not None:
            tuned = self._tuned.get(room, {}).get(image.latent)
            if tuned is not None:
                return tuned
        return self.G

    def tuned_generator(self, room: str, latent: str) -> Generator | None:
        """The room's tuned generator for a latent key (None: that image uses the shared one)."""
        return self._tuned.get(room, {}).get(latent)

    @property
    def tuned_rooms(self) -> set[str]:
        """Rooms holding a tuned generator copy or tuning one now (what ``pti_max_rooms`` caps)."""
        return set(self._tuned) | {r for r, ps in self._projections.items() if ps.pti}

    def _room_ws(self, st: RoomEngine, image: ImageInfo) -> torch.Tensor:
        if st.image != image or st.ws is None:
            st.ws, st.image = self._image_ws(image), image
        return st.ws

    def _latent_data(self, key: str) -> bytes | None:
        data = self._latents.get(key)
        if data is not None:
            self._latents.move_to_end(key)
            return data
        try:
            data = self.manager.store.get_latent(key)
        except StoreError as e:
            raise EngineError(str(e)) from None
        if data is not None:
            self._remember_latent(key, data)
        return data

    def _remember_latent(self, key: str, data: bytes) -> None:
        self._latents[key] = data
        self._latents.move_to_end(key)
        while len(self._latents) > LATENT_CACHE:
            self._latents.popitem(last=False)

    def _commit_latent(self, st: RoomEngine, room: str) -> tuple[str | None, bool]:
        """Store the latent of the drag's last frame; (key, storage failed). None: unchanged image
        (no step, or only the first, whose frame is the start image). A drag that ran on the
        room's tuned generator maps the new key to it too."""
        if st.frame_latent is None or st.steps <= 1:
            return None, False
        data = latent_to_bytes(st.frame_latent, self.model_name)
        key, failed = latent_key(data), False
        try:
            key = self.manager.store.put_latent(data)
        except StoreError as e:
            log.error("could not store a latent: %s (kept in memory)", e)
            failed = True
        self._remember_latent(key, data)
        tuned = self._tuned.get(room)
        gen = st.generator
        if tuned is not None and gen is not None and any(g is gen for g in tuned.values()):
            tuned[key] = gen
        if st.image is not None:  # the room's next image: keep its W+ at hand
            st.image, st.ws = replace(st.image, latent=key), st.frame_latent.to(self.device)
        return key, failed

    def _end_session(self, st: RoomEngine) -> None:
        st.session, st.frame_latent, st.steps, st.drag, st.generator = None, None, 0, -1, None
        st.pair_ids, st.pair_sig, st.mask, st.params = (), (), None, None
        st.last_frame_at = st.fps = None

    def _finish(self, job: EngineJob) -> Outcome:
        st = self._rooms.get(job.room)
        if st is None or st.drag != job.drag:
            return Outcome(job)  # the drag never stepped: nothing to commit
        steps = st.steps
        latent, failed = self._commit_latent(st, job.room)
        self._end_session(st)
        return Outcome(job, latent=latent, storage_failed=failed, steps=steps)

    # --- projections (engine thread) ------------------------------------------------------------

    def _target(self, key: str) -> np.ndarray:
        """A stored upload's target picture, uint8 [H, W, 3] at the model's resolution."""
        try:
            data = self.manager.store.get_upload(key)
        except StoreError as e:
            raise EngineError(str(e)) from None
        if data is None:
            raise EngineError(f"upload {key[:12]}... is missing from the store")
        img = np.array(decode_image(data))  # a writable copy (torch.from_numpy wants one)
        if img.shape[:2] != (self.resolution, self.resolution):
            raise EngineError(
                f"the upload is {img.shape[1]}x{img.shape[0]}; this model needs {self.resolution}"
            )
        return img

    def _projection(self, job: EngineJob) -> ProjectionState:
        """The room's projection session for this job's run, created at its first step."""
        ps = self._projections.get(job.room)
        if ps is not None and ps.run == job.drag:
            return ps
        task = job.task
        assert task is not None
        if task.kind is TaskKind.UPLOAD:
            if task.target is None:
                raise EngineError("an upload projection without a target")
            pti = self._pti_allowed(job.room, task.method)
            target = self._target(task.target)
            if pti:
                session = self.projector.upload_session(
                    target, task.method, task.max_steps, pti_steps=self.pti_steps
                )
            else:
                session = self.projector.upload_session(target, task.method, task.max_steps)
        else:
            pti, session = False, self._blend(job, task)
        ps = self._projections[job.room] = ProjectionState(job.drag, session, pti=pti)
        self._trajectories.setdefault(job.room, Trajectory(self.trajectory_frames)).reset(job.drag)
        return ps

    def _pti_allowed(self, room: str, method: str) -> bool:
        """Whether this room's upload gets pivotal tuning: on, method optimize, and the room holds
        a tuned copy already or fewer than ``pti_max_rooms`` rooms do."""
        if self.pti_steps <= 0 or method != "optimize":
            return False
        others = self.tuned_rooms - {room}
        if len(others) >= self.pti_max_rooms:
            log.info(
                "room %s: upload projected without pivotal tuning: %d room(s) hold a tuned generator "
                "(pti_max_rooms %d)",
                room,
                len(others),
                self.pti_max_rooms,
            )
            return False
        return True

    def _keep_tuned(self, room: str, key: str, ps: ProjectionState) -> None:
        """After a tuned projection's commit: the room's tuned copy, for that latent key (it
        replaces the room's earlier one), without gradients or optimiser state."""
        tuned = getattr(ps.session, "generator", None)
        if not ps.pti or not isinstance(tuned, Generator) or tuned is self.G:
            return  # stopped before pivotal tuning began
        tuned.requires_grad_(False)
        for p in tuned.parameters():
            p.grad = None
        self._tuned[room] = {key: tuned}
        mb = sum(p.numel() * p.element_size() for p in tuned.parameters()) / 2**20
        log.info("room %s: keeps a tuned generator (%.1f MB)", room, mb)

    def _blend(self, job: EngineJob, task: Task) -> ProjectionSession:
        region = (
            None if task.region is None else task.region.flexible_region(self.resolution, self.resolution)
        )
        if region is None:
            raise EngineError("the blend region is empty")
        if task.target is not None:
            source = BlendSource(target=self._target(task.target))
        else:
            source = BlendSource(seed=task.source_seed, truncation=task.source_truncation)
        w_base = self._room_ws(self._state(job.room), job.image)
        return self.projector.blend_session(w_base, source, region, task.max_steps)

    def _project_all(self, jobs: list[EngineJob]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        ready: list[tuple[EngineJob, ProjectionState]] = []
        for job in jobs:
            try:
                ready.append((job, self._projection(job)))
            except ProjectionError as e:
                outcomes.append(self._failed(job, EngineError(str(e))))
            except Exception as e:
                outcomes.append(self._failed(job, e))
        if not ready:
            return outcomes
        t0 = self._clock()
        sessions = [ps.session for _, ps in ready]
        latents = [s.latent().detach().clone() for s in sessions]  # what this step's frames show
        results = step_isolated(self.projector.step_many, sessions)
        self._measure(("project", ""), t0, len(ready))
        for (job, ps), res, before in zip(ready, results, latents, strict=True):
            if isinstance(res, BaseException):
                outcomes.append(self._failed(job, res))
                continue
            outcomes.append(
                self._guard(job, lambda j, ps=ps, res=res, before=before: self._projected(j, ps, res, before))
            )
        return outcomes

    def _projected(
        self, job: EngineJob, ps: ProjectionState, res: StepResult, before: torch.Tensor
    ) -> Outcome:
        jpeg = self._jpeg(res.frame)
        # a step's frame shows the latent before its update, the last step's the final latent
        ps.latent = (ps.session.latent() if res.done else before).detach().to("cpu", torch.float32)
        ps.steps += 1
        traj = self._trajectories.get(job.room)
        if traj is not None and traj.drag == job.drag:
            traj.add(TrajectoryItem(jpeg, [], []))
        self.stats.steps += 1
        psnr = float(ps.session.psnr())
        done = (res.reason or "max_steps") if res.done else None
        if done not in (None, "converged", "max_steps"):
            done = "max_steps"
        frame = FrameResult(
            jpeg, {}, psnr=min(psnr, 99.0) if math.isfinite(psnr) else 99.0, loss=float(res.loss), done=done
        )
        return Outcome(job, frame, steps=ps.steps)

    def _finish_projection(self, job: EngineJob) -> Outcome:
        """Store the latent of the projection's last frame (None: it never stepped)."""
        ps = self._projections.pop(job.room, None)
        if ps is None or ps.run != job.drag or ps.latent is None:
            return Outcome(job)
        data = latent_to_bytes(ps.latent, self.model_name)
        key, failed = latent_key(data), False
        try:
            key = self.manager.store.put_latent(data)
        except StoreError as e:
            log.error("could not store a latent: %s (kept in memory)", e)
            failed = True
        self._remember_latent(key, data)
        self._keep_tuned(job.room, key, ps)
        st = self._state(job.room)  # the room's next image: keep its W+ at hand
        image = replace(
            job.image, seed=job.image.seed if job.task and job.task.kind is TaskKind.BLEND else None
        )
        st.image, st.ws = replace(image, latent=key), ps.latent.to(self.device)
        return Outcome(job, latent=key, storage_failed=failed, steps=ps.steps)

    def _render_all(self, jobs: list[EngineJob]) -> list[Outcome]:
        outcomes, ready = [], []
        groups: dict[int, tuple[Generator, list[tuple[EngineJob, torch.Tensor]]]] = {}
        for job in jobs:
            try:
                ws = self._room_ws(self._state(job.room), job.image)
                G = self._generator(job.room, job.image)
            except Exception as e:
                outcomes.append(self._failed(job, e))
                continue
            groups.setdefault(id(G), (G, []))[1].append((job, ws))
        for G, ready in groups.values():  # one forward pass per generator (shared, or a room's tuned)
            t0 = self._clock()
            try:
                with torch.no_grad():
                    img, _ = G.synthesis(torch.cat([ws for _, ws in ready]), noise_mode="const")
                frames = _frames(img)
            except Exception as e:
                outcomes += [self._failed(job, e) for job, _ in ready]
                continue
            for (job, _), frame in zip(ready, frames, strict=True):
                outcomes.append(self._guard(job, lambda j, f=frame: Outcome(j, FrameResult(self._jpeg(f)))))
            self._measure(("render", ""), t0, len(ready))
            self.stats.renders += len(ready)
        return outcomes

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

    def _prepare(self, job: EngineJob) -> RoomEngine:
        """The room's session for this job's drag, created or brought up to date (points, mask, params)."""
        st = self._state(job.room)
        res = self.resolution
        pairs = job.pairs
        handles = [_clamp(p.handle, res) for p in pairs]
        targets = [_clamp(p.target, res) for p in pairs]
        sig = tuple((p.id, p.handle_rev, p.target) for p in pairs)
        if st.session is None or st.drag != job.drag:
            mode = self.modes.get(job.params.mode)
            if mode is None:
                raise EngineError(
                    f"{job.params.mode} mode: predictor not available for this model"
                    if job.params.mode == "predict"
                    else f"engine mode {job.params.mode!r} is not available on this server"
                )
            self._end_session(st)
            fixed = job.mask.fixed_region(res, res)
            spec = SessionSpec(
                job.room,
                self._generator(job.room, job.image),
                self._room_ws(st, job.image),
                handles,
                targets,
                None if fixed is None else ~fixed,
                job.params,
            )
            st.session, st.mode, st.drag = mode.create(spec), mode.name, job.drag
            st.generator = spec.G
            st.pair_ids, st.pair_sig, st.mask, st.params = (
                tuple(p.id for p in pairs),
                sig,
                job.mask,
                job.params,
            )
            st.started = time.perf_counter()
            traj = self._trajectories.setdefault(job.room, Trajectory(self.trajectory_frames))
            traj.reset(job.drag)
            return st
        session = st.session
        if sig != st.pair_sig:
            old = {(pid, rev): i for i, (pid, rev, _) in enumerate(st.pair_sig)}
            current = session.handles
            keep = [old.get((p.id, p.handle_rev)) for p in pairs]
            handles = [current[k] if k is not None else h for k, h in zip(keep, handles, strict=True)]
            set_points = session.set_points
            try:
                set_points(handles, targets, keep=keep)  # type: ignore[call-arg]
            except TypeError:  # a mode whose sessions do not take keep=
                set_points(handles, targets)
            st.pair_ids, st.pair_sig = tuple(p.id for p in pairs), sig
        if job.mask != st.mask:
            fixed = job.mask.fixed_region(res, res)
            session.set_mask(None if fixed is None else ~fixed)
            st.mask = job.mask
        if job.params != st.params:
            mode = self.modes[st.mode]
            if mode.options is not None:
                session.set_options(**mode.options(job.params, res))
            st.params = job.params
        return st

    def _step_all(self, jobs: list[EngineJob]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        by_mode: dict[str, list[tuple[EngineJob, RoomEngine]]] = {}
        for job in jobs:
            try:
                st = self._prepare(job)
            except Exception as e:
                outcomes.append(self._failed(job, e))
                continue
            by_mode.setdefault(st.mode, []).append((job, st))
        for mode_name, items in by_mode.items():
            mode = self.modes[mode_name]
            t0 = self._clock()
            sessions = [st.session for _, st in items]
            latents = [s.latent() for s in sessions]  # the latents these frames are rendered from
            results = step_isolated(mode.step_many, sessions)
            self._measure(("step", mode_name), t0, len(items))
            for (job, st), res, lat in zip(items, results, latents, strict=True):
                if isinstance(res, BaseException):
                    outcomes.append(self._failed(job, res))
                    continue
                outcomes.append(
                    self._guard(job, lambda j, st=st, res=res, lat=lat: self._stepped(j, st, res, lat))
                )
        return outcomes

    def _stepped(self, job: EngineJob, st: RoomEngine, res: StepResult, latent: torch.Tensor) -> Outcome:
        jpeg = self._jpeg(res.frame)
        st.frame_latent = latent
        st.steps += 1
        now = time.perf_counter()
        if st.last_frame_at is not None:
            rate = 1.0 / max(1e-6, now - st.last_frame_at)
            st.fps = rate if st.fps is None else 0.8 * st.fps + 0.2 * rate
        st.last_frame_at = now
        handles = dict(zip(st.pair_ids, res.handles, strict=False))
        traj = self._trajectories.get(job.room)
        if traj is not None and traj.drag == job.drag:
            traj.add(TrajectoryItem(jpeg, list(res.handles), list(res.targets)))
        self.stats.steps += 1
        reached = res.done and res.reason == "reached"
        ended = "max_steps" if res.done and not reached else None  # the session's own budget is spent
        fps = None if st.fps is None else round(st.fps, 2)
        return Outcome(job, FrameResult(jpeg, handles, reached=reached, fps=fps, done=ended), steps=st.steps)


def request_stop(room: Room) -> None:
    """Turn a running drag into a stopping one (the next FINISH job commits it) without an op:
    used at shutdown, when nobody asked for the stop."""
    room.status, room.finish_reason = Status.STOPPING, "stopped"


def _clamp(p: Point, res: int) -> Point:
    x, y = (float(c) if math.isfinite(c) else 0.0 for c in p)
    return (min(max(x, 0.0), res - 1.0), min(max(y, 0.0), res - 1.0))


def _frames(img: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> uint8 [N, H, W, 3]."""
    a = to_uint8(img)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return a[..., :3]


def trajectory_gif(items: Sequence[TrajectoryItem], fps: float = 15.0, size: int = 256) -> bytes:
    """An endlessly looping GIF of a drag's frames with its handles (red) and targets (blue)."""
    from PIL import Image

    if not items:
        raise ValueError("no frames")
    scale = max(1, size // max(decode_image(items[0].jpeg).shape[:2]))
    frames = [
        Image.fromarray(draw_points(decode_image(item.jpeg), item.handles, item.targets, scale=scale))
        for item in items
    ]
    buf = io.BytesIO()
    frames[0].save(
        buf,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=max(20, round(1000 / fps)),
        loop=0,
    )
    return buf.getvalue()
