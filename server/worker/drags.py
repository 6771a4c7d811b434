"""Drag jobs: a room's drag session created at its first STEP and kept up to date with the room's
points, mask and parameters; rooms that share a model and a mode stepped in one batched pass; the
FINISH job commits the latent of the drag's last frame.

Rooms that share a model and a mode are stepped in one batched forward/backward pass
(``EngineMode.step_many``; DragGAN's ``step_batch``); rooms of different models never share a
batch. If a batch raises, each of its rooms is retried alone, so a failure
reaches only the room that caused it (its drag ends with reason ``error`` and commits what it had
reached) and the other rooms keep running.

Checkpoints: every ``checkpoint_s`` seconds a running drag stores the latent of the frame it shows
(``FrameResult.checkpoint``); the room saves it with its run, so that a crash loses at most that
much of the drag (``RoomRuns.recover_run`` commits the checkpoint after the restart).
"""

from __future__ import annotations

import math
import time

import torch

from server.core.jobs import EngineJob, FrameResult
from server.engine.session import Point, StepResult
from server.worker.base import WorkerBase
from server.worker.media import Trajectory, TrajectoryItem
from server.worker.modes import SessionSpec, step_isolated
from server.worker.state import EngineError, Outcome, RoomEngine


class DragJobs(WorkerBase):
    """STEP and FINISH jobs of drags (engine thread)."""

    def _prepare(self, job: EngineJob) -> RoomEngine:
        """The room's session for this job's drag, created or brought up to date (points, mask, params)."""
        st = self._state(job.room)
        model = self._model(job.image)
        res = model.resolution
        pairs = job.pairs
        handles = [_clamp(p.handle, res) for p in pairs]
        targets = [_clamp(p.target, res) for p in pairs]
        sig = tuple((p.id, p.handle_rev, p.target) for p in pairs)
        if st.session is None or st.drag != job.drag:
            mode = model.modes.get(job.params.mode)
            if mode is None:
                raise EngineError(
                    f"{job.params.mode} mode: predictor not available for this model"
                    if job.params.mode == "predict"
                    else f"engine mode {job.params.mode!r} is not available for model {model.name}"
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
            st.started = st.checkpoint_at = time.perf_counter()
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
            mode = model.modes[st.mode]
            if mode.options is not None:
                session.set_options(**mode.options(job.params, res))
            st.params = job.params
        return st

    def _step_all(self, jobs: list[EngineJob]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        by_mode: dict[tuple[str, str], list[tuple[EngineJob, RoomEngine]]] = {}
        for job in jobs:
            try:
                st = self._prepare(job)
            except Exception as e:
                outcomes.append(self._failed(job, e))
                continue
            by_mode.setdefault((job.image.model, st.mode), []).append((job, st))
        for (model_name, mode_name), items in by_mode.items():
            try:
                mode = self.models.get(model_name).modes[mode_name]
            except Exception as e:
                outcomes += [self._failed(job, e) for job, _ in items]
                continue
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
        ended = res.reason if res.done and not reached else None  # stalled, lost (or a cap of its own)
        lost = tuple(pid for pid, flag in zip(st.pair_ids, res.lost, strict=False) if flag)
        fps = None if st.fps is None else round(st.fps, 2)
        checkpoint = self._checkpoint(st, latent, now)
        frame = FrameResult(
            jpeg, handles, reached=reached, fps=fps, done=ended, checkpoint=checkpoint, lost=lost
        )
        return Outcome(job, frame, steps=st.steps)

    def _checkpoint(self, st: RoomEngine, latent: torch.Tensor, now: float) -> str | None:
        """Store the latent of this frame when the drag's last checkpoint is ``checkpoint_s`` old
        (not the first frame: it shows the start image). None: not now, or the store failed."""
        if self.checkpoint_s is None or st.steps <= 1 or now - st.checkpoint_at < self.checkpoint_s:
            return None
        if st.image is None:
            return None
        key, failed = self._model(st.image).latents.put(latent)
        if failed:  # kept in memory only: no use after a crash
            return None
        st.checkpoint_at = now
        return key

    def _finish(self, job: EngineJob) -> Outcome:
        st = self._rooms.get(job.room)
        if st is None or st.drag != job.drag:
            return Outcome(job)  # the drag never stepped: nothing to commit
        steps = st.steps
        latent, failed = self._commit_latent(st, job.room)
        self._end_session(st)
        return Outcome(job, latent=latent, storage_failed=failed, steps=steps)


def _clamp(p: Point, res: int) -> Point:
    x, y = (float(c) if math.isfinite(c) else 0.0 for c in p)
    return (min(max(x, 0.0), res - 1.0), min(max(y, 0.0), res - 1.0))
