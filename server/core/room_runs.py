"""The worker's side of a room: the engine job it wants now, and what a job's frame, end or
failure does to it.

Drags and projections are runs that share one counter, ``drag``: every job and frame carries it,
so a result for a run that has ended, or for an image that has changed meanwhile, is dropped. A
drag ends when its targets are reached, at the step cap, on ``stop`` or on an engine error; the
latent of its last frame is committed as a ``drag`` history entry. A projection's end commits an
``upload`` or ``blend`` entry; a failed projection commits nothing. Mixed into
:class:`~server.core.room.Room`; the room never holds tensors, only latent keys.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any

from server.core.jobs import EngineJob, FrameResult, JobKind
from server.core.outgoing import Kind, Outgoing
from server.core.protocol import error_message
from server.core.room_ops import RoomOps
from server.core.state import HistoryEntry, Layout, Point, RunRecord, Status, TaskKind, pairs_to_wire

log = logging.getLogger(__name__)


class RoomRuns(RoomOps):
    """Engine jobs out, frames and ends in. Not thread-safe: call it from the event loop."""

    # the room's state (set by Room.__init__), besides RoomOps'
    id: str
    frame_seq: int

    @property
    def busy(self) -> bool:
        """A drag or projection runs or ends: image changes are refused."""
        return self.status is not Status.IDLE

    @property
    def wants_engine(self) -> bool:
        return self.status is not Status.IDLE or self.render_pending

    def engine_job(self) -> EngineJob | None:
        """The work this room wants from the engine now, or None."""
        if self.status is Status.RUNNING and not self.pairs:
            self.status, self.finish_reason = Status.STOPPING, "stopped"  # every pair was removed
        if self.status is Status.STOPPING:
            kind = JobKind.FINISH
        elif self.status is Status.RUNNING:
            kind = JobKind.STEP
        elif self.status is Status.PROJECTING:
            kind = JobKind.PROJECT
        elif self.render_pending:
            kind = JobKind.RENDER
        else:
            return None
        return EngineJob(
            room=self.id,
            kind=kind,
            drag=self.drag,
            step=self.step,
            version=self.version,
            image_rev=self.image_rev,
            image=self.image,
            pairs=tuple(self.pairs.values()),
            mask=self.mask,
            params=self.params,
            reason=self.finish_reason if kind is JobKind.FINISH else None,
            task=self.task,
        )

    def _current(self, job: EngineJob) -> bool:
        if job.kind is JobKind.RENDER:
            return job.image_rev == self.image_rev
        return job.drag == self.drag and self.status is not Status.IDLE

    def on_frame(self, job: EngineJob, frame: FrameResult) -> list[Outgoing]:
        """A RENDER, STEP or PROJECT job's result: records tracked handles (unless an editor placed
        that handle after the job was taken), counts the step, and returns the frame message. A
        reached target, a session that ended by itself (stalled, a lost handle) or the step cap turn
        the drag to stopping, a projection that is done turns to stopping too: the next
        engine_job() is FINISH."""
        if job.kind is JobKind.FINISH:
            raise ValueError("a FINISH job has no frame: call on_finished")
        if not self._current(job):
            return []  # the image changed or the drag ended meanwhile
        self.render_pending = False  # a step's frame shows the current image too
        lost: list[str] = []
        if job.kind is JobKind.STEP:
            self.step = job.step + 1
            for pid, pos in (frame.handles or {}).items():
                p = self.pairs.get(pid)
                if p is not None and p.handle_rev <= job.version:
                    self.pairs[pid] = replace(p, handle=self._clamp(pos))
            # a handle an editor placed anew since the job was taken is not lost (it gets a new template)
            lost = [p for p in frame.lost if p in self.pairs and self.pairs[p].handle_rev <= job.version]
            if frame.checkpoint is not None:  # this frame's latent is stored: a crash keeps it
                self._checkpoint = (self.step, frame.checkpoint, tuple(self.pairs.values()))
                self.dirty = True
            ended = frame.reached or frame.done is not None or self.step >= self.params.max_steps
            if self.status is Status.RUNNING and ended:
                self.status = Status.STOPPING
                self.finish_reason = "reached" if frame.reached else frame.done or "max_steps"
        elif job.kind is JobKind.PROJECT:
            self.step = job.step + 1
            if self.status is Status.PROJECTING and frame.done is not None:
                self.status, self.finish_reason = Status.STOPPING, frame.done
        self.frame_seq += 1
        msg = {
            "t": "frame",
            "seq": self.frame_seq,
            "drag": self.drag,
            "step": self.step,
            "status": self.status.value,
            "w": self.image.w,
            "h": self.image.h,
            "jpeg": frame.jpeg,
            "handles": {p.id: list(p.handle) for p in self.pairs.values()},
        }
        if frame.fps is not None:
            msg["fps"] = frame.fps
        if lost:
            msg["lost"] = lost
        for key in ("psnr", "loss"):
            v = getattr(frame, key)
            if v is not None and math.isfinite(v):
                msg[key] = round(float(v), 4)
        self.latest_frame = Outgoing(msg, kind=Kind.FRAME)
        return [self.latest_frame]

    def _clamp(self, pos: Point) -> Point:
        x, y = (float(c) if math.isfinite(c) else 0.0 for c in pos)
        return (min(max(x, 0.0), self.image.w - 1.0), min(max(y, 0.0), self.image.h - 1.0))

    def on_finished(self, job: EngineJob, latent: str | None, message: str | None = None) -> list[Outgoing]:
        """End the drag (after a FINISH job, or any time the worker gives up on it). ``latent`` is
        the store key of the drag's final latent (None: the image did not change); a new latent
        is committed to the history. Returns the ``finish`` op and the ``status`` message."""
        if job.drag != self.drag or self.status is Status.IDLE:
            return []
        if self.task is not None:
            return self._end_task(latent, message)
        reason = self.finish_reason or "stopped"
        patch: dict[str, Any] = {}
        if latent is not None and latent != self.image.latent:
            image = replace(self.image, latent=latent)
            after = Layout(tuple(self.pairs.values()), self.mask)
            self.history.commit(HistoryEntry("drag", image, self._drag_before, after, self._drag_by))
            self.history_dirty = True
            self.image = image  # the last frame shows it: no render needed
            self.image_rev += 1
            patch = {"image": image.to_wire(), "history": self.history.to_wire()}
            self._record_run(self._drag_by, self._drag_before.pairs)  # the starter's to undo
        self.status, self.finish_reason = Status.IDLE, None
        patch.update(status=self.status.value, step=self.step, pairs=pairs_to_wire(list(self.pairs.values())))
        out = [self._op("finish", None, None, patch), self._status_message(reason, message)]
        if reason == "error":
            out.append(Outgoing(error_message("engine_failed", message and f"drag failed: {message}")))
        return out + self._undo_messages()

    def _end_task(self, latent: str | None, message: str | None) -> list[Outgoing]:
        """End the projection: commit ``latent`` as a history entry (unless it failed or never
        stepped), clear points and mask like any new image, back to idle."""
        task, reason = self.task, self.finish_reason or "stopped"
        assert task is not None
        patch: dict[str, Any] = {}
        if latent is not None and reason != "error":
            seed = self.image.seed if task.kind is TaskKind.BLEND else None
            image = replace(self.image, seed=seed, latent=latent)
            snap = self._undo_snapshot()
            self.pairs, self.mask = {}, self.mask.cleared()
            self.history.commit(HistoryEntry(task.kind.value, image, self._drag_before, Layout(), task.by))
            self.history_dirty = True
            self.image = image  # the last frame shows it: no render needed
            self.image_rev += 1
            self._record_since(task.by, task.kind.value, snap)  # the starter's to undo
            patch = {
                "image": image.to_wire(),
                "pairs": [],
                "mask": self.mask.to_wire(),
                "history": self.history.to_wire(),
            }
        else:
            self.render_pending = True  # frames showed the projection: show the image again
            self.latest_frame = None
        self.status, self.finish_reason, self.task = Status.IDLE, None, None
        patch.update(status=self.status.value, step=self.step, task=None)
        out = [self._op("finish", None, None, patch), self._status_message(reason, message)]
        if reason == "error":
            out.append(Outgoing(error_message("engine_failed", message and f"projection failed: {message}")))
        return out + self._undo_messages()

    def recover_run(self, run: RunRecord) -> None:
        """At load: ``run`` was in progress when the server stopped without ending it (a crash).
        The room comes back idle and reports it in ``interrupted``. A drag with a checkpoint commits
        it as a ``drag`` history entry (undo goes back to the image before the drag); handles of the
        pairs it knew go back to where they were at the image kept (the checkpoint, or the start)."""
        kept = 0
        reference = run.before.pairs
        if run.kind == "drag" and run.latent is not None and run.latent != self.image.latent:
            reference, kept = run.pairs, run.step
        handles = {p.id: p.handle for p in reference}
        self.pairs = {pid: replace(p, handle=handles.get(pid, p.handle)) for pid, p in self.pairs.items()}
        if kept:
            assert run.latent is not None
            image = replace(self.image, latent=run.latent)
            after = Layout(tuple(self.pairs.values()), self.mask)
            self.history.commit(HistoryEntry("drag", image, run.before, after, run.by))
            self.image, self.history_dirty = image, True
            self._record_run(run.by, run.before.pairs)  # the starter's to undo
        self.step, self.interrupted, self.dirty = kept, run.interrupted_wire(kept), True
        log.warning(
            "room %s: %s %d was interrupted by the server stopping; %s",
            self.id,
            run.kind,
            run.drag,
            f"its step {kept} is kept" if kept else "nothing of it is kept",
        )

    def on_error(self, job: EngineJob, message: str, latent: str | None = None) -> list[Outgoing]:
        """The engine failed on this room's job. A drag ends with reason ``error`` (committing
        ``latent`` if the worker could save one); a failed render is reported and not retried."""
        log.warning("room %s: engine %s failed: %s", self.id, job.kind.value, message)
        if job.kind is JobKind.RENDER:
            if not self._current(job):
                return []
            self.render_pending = False
            return [Outgoing(error_message("engine_failed", f"render failed: {message}"))]
        if job.drag != self.drag or self.status is Status.IDLE:
            return []
        self.finish_reason = "error"
        return self.on_finished(job, latent, message)
