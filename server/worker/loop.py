"""The worker: owns the models (``models.py``) on its device, and advances every running room by one
step per tick.

Threads. All model work (sessions, forward passes, JPEG encoding, latent serialisation) runs in
one dedicated thread (a single-thread executor); the event loop never waits on the device. The
rooms stay on the event loop (they are not thread-safe): each tick the loop takes an immutable
:class:`~server.core.jobs.EngineJob` per room that wants work, hands the batch to the thread, and
applies the results (``on_frame`` / ``on_finished`` / ``on_error``) back on the loop, which then
gives each frame message to the room's connections (the edge's fan-out ``Hub``).

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

Each kind of job has its module: ``drags.py`` (STEP, FINISH of a drag), ``projections.py``
(PROJECT, FINISH of an upload or blend; ``pti.py`` for pivotal tuning copies), ``renders.py``
(RENDER and the downloads); ``modes.py`` holds the engine modes, ``latents.py`` each image's W+
and the latent cache, ``media.py`` frames and the trajectory GIF, ``base.py`` the shared state.

Shutdown (:meth:`Worker.stop`): the current tick completes, every running drag is stopped and
committed (FINISH with reason ``stopped``), then the thread ends. A running projection is
abandoned (the room stays on its last committed image; the upload stays stored).
"""

from __future__ import annotations

import asyncio
import logging
import time

import torch

from server.core.jobs import EngineJob, JobKind
from server.core.outgoing import Outgoing
from server.core.protocol import error_message
from server.core.room import Room
from server.core.state import Params, Status
from server.worker.drags import DragJobs
from server.worker.modes import SessionSpec
from server.worker.projections import ProjectionJobs
from server.worker.renders import RenderJobs
from server.worker.state import Outcome

log = logging.getLogger(__name__)


class Worker(DragJobs, ProjectionJobs, RenderJobs):
    """One per device: the tick loop on the event loop around the job kinds' engine-thread work.
    Create it on the event loop (the constructor is :class:`~server.worker.base.WorkerBase`'s),
    then ``start()``; ``await stop()`` at shutdown."""

    # --- loop side ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._executor.submit(self._warm_up)  # runs before the first tick's work
            self._task = asyncio.get_running_loop().create_task(self._run(), name="livedrag worker")

    def _warm_up(self) -> None:
        """One throw-away step per mode of the default model: the first optimiser pulls in seconds
        of lazy imports (torch._dynamo), which should not land on the first person's drag."""
        t0 = time.perf_counter()
        model = self.default_model
        res, G = model.resolution, model.G
        for mode in model.modes.values():
            try:
                with torch.no_grad():
                    ws = G.ws_from_seed(0)
                spec = SessionSpec("", G, ws, [(res / 4, res / 4)], [(res / 2, res / 2)], None, Params())
                mode.step_many([mode.create(spec)])
            except Exception as e:  # a broken mode shows up in the first real drag, with its message
                log.warning("warm-up of mode %s failed: %s", mode.name, e)
        self.warm = True
        log.debug("engine warm-up took %.2f s", time.perf_counter() - t0)

    def wake(self) -> None:
        """Something may have changed (a message, a join): look for work now."""
        self._wake.set()

    def forget_gone(self) -> None:
        """Drop the engine state of rooms no longer live (archived, deleted), on the engine thread
        between ticks (a tick does it too, but no tick may come while no room wants work), and
        unload the models no live room has used for the pool's idle time."""
        if not self._stopping:
            self._executor.submit(self._forget, frozenset(self.manager.rooms))
            self.models.sweep()

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
        """The jobs to run now. A job whose model is not loaded starts its load and waits (the
        pool wakes the worker when the load ends); one whose model failed to load fails."""
        jobs, failed = [], []
        for job in self.manager.engine_jobs():
            if job.kind is JobKind.RENDER:
                room = self.manager.get(job.room)
                if room is None or not room.members:
                    continue  # nobody looks: render when someone joins
            name = job.image.model
            if self.models.loaded(name) is None:
                why = self.models.failure(name) if name in self.models.specs else self.models.unknown(name)
                if why is not None:
                    failed.append(Outcome(job, error=why))
                else:
                    self.models.ensure(name)
                continue
            jobs.append(job)
        if failed:
            self._apply(failed)
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

    # --- engine thread ---------------------------------------------------------------------------

    def _compute(self, jobs: list[EngineJob], live: frozenset[str] | None = None) -> list[Outcome]:
        t0, c0 = time.perf_counter(), time.thread_time()
        if live is not None:
            self._forget(live)
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

    def _forget(self, live: frozenset[str]) -> None:
        """Forget the rooms that are no longer live (engine thread)."""
        for gone in set(self._rooms) - live:
            self._rooms.pop(gone, None)
        for gone in set(self._trajectories) - live:
            self._trajectories.pop(gone, None)
        for gone in set(self._projections) - live:
            self._projections.pop(gone, None)
        self._tuned.forget(live)  # an archived or deleted room's tuned generator goes with it


def request_stop(room: Room) -> None:
    """Turn a running drag into a stopping one (the next FINISH job commits it) without an op:
    used at shutdown, when nobody asked for the stop."""
    room.status, room.finish_reason = Status.STOPPING, "stopped"
