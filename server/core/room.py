"""One collaborative room, server-authoritative and sans-I/O (no Starlette, no torch, no sockets).

The room applies members' messages in arrival order, stamps every applied edit with the next
room version, and returns the messages to send as :class:`Outgoing` values; the app sends them.
The worker drives drags through :meth:`Room.engine_job`, :meth:`Room.on_frame`,
:meth:`Room.on_finished` and :meth:`Room.on_error`; the room never holds tensors, only latent
keys. Time comes from an injected clock. Protocol: shared/protocol.md.

Projections. Besides drags the room runs projections (:class:`~server.core.state.Task`): an uploaded
picture (:meth:`Room.start_upload`, called by the app after it validated and stored the picture)
or a blend (the ``blend`` op). Status goes idle -> projecting -> stopping -> idle; the worker gets
PROJECT jobs while projecting and one FINISH job at the end, whose latent is committed as a
history entry of kind ``upload`` or ``blend`` (undo goes back to the image before it). Drags,
new images, undo and redo are refused with ``busy`` while a projection runs; ``stop`` ends it
early and commits what it reached; a failed projection commits nothing.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from server.core.jobs import EngineJob, FrameResult, JobKind
from server.core.limits import RoomLimits
from server.core.members import JoinRefused, Member, Presence
from server.core.outgoing import Disconnect, Kind, Outgoing
from server.core.protocol import (
    PROTOCOL_VERSION,
    ProtocolError,
    decode,
    error_message,
    message_ref,
    parse_client,
)
from server.core.protocol_spec import CLIENT_MESSAGES, LIMITS
from server.core.state import (
    History,
    HistoryEntry,
    ImageInfo,
    Layout,
    Pair,
    Point,
    RoomRecord,
    Status,
    Task,
    TaskKind,
    UploadInfo,
    pairs_to_wire,
)

__all__ = ["EngineJob", "FrameResult", "JobKind", "JoinRefused", "Joined", "Room", "RoomLimits"]

log = logging.getLogger(__name__)
Clock = Callable[[], float]


@dataclass
class Joined:
    """A successful join. Send ``messages``; if ``replaced_session`` is set, close the connection
    that held that session of this member with close code ``replaced``."""

    member_id: str
    session: int
    role: str
    messages: list[Outgoing]
    replaced_session: int | None = None


class Room:
    """State, members and history of one room. Not thread-safe: call it from the event loop."""

    def __init__(
        self, record: RoomRecord, limits: RoomLimits | None = None, clock: Clock = time.monotonic
    ) -> None:
        self.limits = limits or RoomLimits()
        self.clock = clock
        self.id = record.id
        self.edit_hash, self.view_hash = record.edit_hash, record.view_hash
        self.created = record.created
        self.image = record.image
        self.pairs: dict[str, Pair] = {p.id: p for p in record.pairs}
        self.mask = record.mask
        self.params = record.params
        self.history = History(list(record.history), record.history_index, self.limits.history_max)
        self.version, self.drag, self.next_member = record.version, record.drag, record.next_member
        self.status = Status.IDLE  # a drag running at shutdown is not resumed
        self.step = 0
        self.finish_reason: str | None = None
        self.task: Task | None = None  # the projection running now (not persisted)
        self.upload: UploadInfo | None = record.upload
        self._drag_before = Layout()
        self._drag_by: str | None = None
        self.image_rev = 0
        self.render_pending = True  # no frame yet: the worker renders one
        self.frame_seq = 0
        self.latest_frame: Outgoing | None = None
        self.presence = Presence(self.limits, clock)  # who is connected (not persisted)
        self.members = self.presence.members  # member id -> Member, in join order
        self.dirty = False  # persistent state changed since the last save
        self.history_dirty = False  # ... and the history among it

    # --- persistence ------------------------------------------------------------------------

    def to_record(self) -> RoomRecord:
        return RoomRecord(
            id=self.id,
            edit_hash=self.edit_hash,
            view_hash=self.view_hash,
            image=self.image,
            pairs=tuple(self.pairs.values()),
            mask=self.mask,
            params=self.params,
            history=tuple(self.history.entries),
            history_index=self.history.index,
            version=self.version,
            drag=self.drag,
            next_member=self.next_member,
            created=self.created,
            upload=self.upload,
        )

    # --- wire views -------------------------------------------------------------------------

    @property
    def bounds(self) -> tuple[int, int]:
        return (self.image.w, self.image.h)

    @property
    def editors(self) -> list[Member]:
        return self.presence.editors

    @property
    def spectators(self) -> int:
        return self.presence.spectators

    def state_wire(self) -> dict[str, Any]:
        return {
            "image": self.image.to_wire(),
            "pairs": pairs_to_wire(list(self.pairs.values())),
            "mask": self.mask.to_wire(),
            "params": self.params.to_wire(),
            "status": self.status.value,
            "step": self.step,
            "drag": self.drag,
            "history": self.history.to_wire(),
            "task": None if self.task is None else self.task.to_wire(),
            "upload": None if self.upload is None else self.upload.to_wire(),
        }

    def snapshot_message(self) -> dict[str, Any]:
        return {
            "t": "snapshot",
            "version": self.version,
            "state": self.state_wire(),
            "members": [m.to_wire() for m in self.editors],
            "spectators": self.spectators,
        }

    def recipients(self, out: Outgoing) -> list[str]:
        """Member ids an Outgoing goes to."""
        return self.presence.recipients(out)

    def summary(self) -> dict[str, Any]:
        """For logs and health checks (no capabilities)."""
        return {
            "id": self.id,
            "editors": len(self.editors),
            "spectators": self.spectators,
            "status": self.status.value,
            "version": self.version,
            "step": self.step,
        }

    # --- joining and leaving ----------------------------------------------------------------

    def join(self, role: str, name: str, client_id: str | None = None) -> Joined:
        """Add a member (role already decided from the capability). Raises JoinRefused(room_full)."""
        member, out, replaced = self.presence.add(role, name, client_id, self._new_member_id)
        return Joined(member.id, member.session, role, out + self._welcome(member), replaced)

    def _new_member_id(self) -> str:
        self.next_member += 1
        self.dirty = True  # member ids are never reused, even across restarts
        return f"m{self.next_member - 1}"

    def _welcome(self, member: Member) -> list[Outgoing]:
        welcome = {
            "t": "welcome",
            "v": PROTOCOL_VERSION,
            "room": self.id,
            "you": member.id,
            "role": member.role,
            "name": member.name,
            "colour": member.colour,
            "limits": self.client_limits(),
        }
        out = [Outgoing(welcome, to=member.id), Outgoing(self.snapshot_message(), to=member.id)]
        if self.latest_frame is not None:
            out.append(self.latest_frame.retarget(member.id))
        return out

    def client_limits(self) -> dict[str, float]:
        keys = (
            "max_message_bytes",
            "max_stroke_points",
            "max_name_chars",
            "frame_credits",
            "ping_interval_s",
        )
        return {
            **{k: LIMITS[k] for k in keys},
            "max_pairs": self.limits.max_pairs,
            "cursor_hz": self.limits.cursor_hz,
            "edit_rate_per_s": self.limits.rates.edit_rate,
            "max_project_steps": self.limits.max_project_steps,
        }

    def leave(self, member_id: str, session: int) -> list[Outgoing]:
        """A connection closed. Ignored when that member has since joined on a newer session."""
        return self.presence.remove(member_id, session)

    # --- client messages --------------------------------------------------------------------

    def receive(self, member_id: str, data: bytes) -> list[Outgoing]:
        """Bytes from a joined member -> messages to send. Refusals become ``error`` messages to
        that member; raises :class:`Disconnect` when the connection must be closed."""
        member = self.members.get(member_id)
        if member is None:
            return []
        raw = None
        try:
            raw = decode(data)
            spec = CLIENT_MESSAGES.get(raw["t"])
            rate = spec.rate if spec is not None else "edit"
            if not member.limiter.allow(rate):
                if rate != "edit":
                    return []  # cursors, acks and pings over budget are dropped quietly
                raise ProtocolError("rate_limited", ref=message_ref(raw))
            return self.handle(member, parse_client(raw, self.bounds))
        except ProtocolError as e:
            return self._refuse(member, e)
        except Exception:  # a bug: report it, keep the connection and the room going
            log.exception("room %s: message from %s failed", self.id, member_id)
            return [Outgoing(error_message("internal", ref=message_ref(raw)), to=member_id)]

    def handle(self, member: Member, msg: dict[str, Any]) -> list[Outgoing]:
        """Apply one validated client message (from protocol.parse_client) from a member."""
        t, ref = msg["t"], msg.get("id")
        spec = CLIENT_MESSAGES[t]
        try:
            if t == "hello":
                raise ProtocolError("unexpected_hello")
            if spec.role == "editor" and not member.is_editor:
                raise ProtocolError("forbidden")
            if not spec.versioned:
                return getattr(self, f"_on_{t}")(member, msg)
            before = self.status
            patch = getattr(self, f"_op_{t}")(member, msg)
        except ProtocolError as e:
            e.ref = ref
            raise
        out = [self._op(t, member.id, ref, patch)]
        if before is Status.IDLE and self.status in (Status.RUNNING, Status.PROJECTING):
            out.append(self._status_message(None))
        return out

    def _refuse(self, member: Member, e: ProtocolError) -> list[Outgoing]:
        out = [Outgoing(e.to_message(), to=member.id)]
        if e.close:
            raise Disconnect(e.close, out)
        if e.strike and not member.limiter.strike():
            raise Disconnect("rate_limited" if e.code == "rate_limited" else "protocol_violation", out)
        return out

    def _op(self, name: str, by: str | None, ref: int | None, patch: dict[str, Any]) -> Outgoing:
        self.version += 1
        self.dirty = True
        return Outgoing({"t": "op", "v": self.version, "op": name, "by": by, "ref": ref, "patch": patch})

    # versioned operations: change state, return the patch (wire values of the changed keys)

    def _pair(self, pair_id: str) -> Pair:
        if pair_id not in self.pairs:
            raise ProtocolError("unknown_pair", f"no pair {pair_id!r} (removed by someone?)")
        return self.pairs[pair_id]

    def _pairs_patch(self) -> dict[str, Any]:
        return {"pairs": pairs_to_wire(list(self.pairs.values()))}

    def _op_add_pair(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        if msg["pair"] in self.pairs:
            raise ProtocolError("duplicate_pair", f"pair {msg['pair']!r} exists")
        if len(self.pairs) >= self.limits.max_pairs:
            raise ProtocolError("too_many_pairs", f"at most {self.limits.max_pairs} point pairs")
        self.pairs[msg["pair"]] = Pair(msg["pair"], msg["handle"], msg["target"], member.id, self.version + 1)
        return self._pairs_patch()

    def _op_move_point(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        p = self._pair(msg["pair"])
        if msg["which"] == "handle":
            p = replace(p, handle=msg["pos"], handle_rev=self.version + 1)
        else:
            p = replace(p, target=msg["pos"])
        self.pairs[p.id] = p
        return self._pairs_patch()

    def _op_remove_pair(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        del self.pairs[self._pair(msg["pair"]).id]
        return self._pairs_patch()

    def _op_clear_points(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        self.pairs.clear()
        return self._pairs_patch()

    def _op_paint_mask(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        self.mask = self.mask.painted(msg["mode"], msg["radius"], msg["points"])
        return {"mask": self.mask.to_wire()}

    def _op_clear_mask(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        self.mask = self.mask.cleared()
        return {"mask": self.mask.to_wire()}

    def _op_set_params(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        self.params = self.params.updated(msg["params"])
        return {"params": self.params.to_wire()}

    def _op_start(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        if self.task is not None:
            raise ProtocolError("busy", "a projection is running: wait for it or stop it")
        if self.status is not Status.IDLE:
            raise ProtocolError("already_running")
        if not self.pairs:
            raise ProtocolError("no_points")
        self.status, self.step, self.finish_reason = Status.RUNNING, 0, None
        self.drag += 1
        self._drag_before = Layout(tuple(self.pairs.values()), self.mask)
        self._drag_by = member.id
        return {"status": self.status.value, "step": 0, "drag": self.drag}

    def _op_stop(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        if self.status not in (Status.RUNNING, Status.PROJECTING):
            what = "projection" if self.task is not None else "drag"
            raise ProtocolError(
                "not_running", f"the {what} is already stopping" if self.status is Status.STOPPING else None
            )
        self.status, self.finish_reason = Status.STOPPING, "stopped"
        return {"status": self.status.value}

    def _require_idle(self) -> None:
        if self.status is not Status.IDLE:
            raise ProtocolError(
                "busy", "a projection is running: wait for it or stop it" if self.task is not None else None
            )

    # projections: an upload (started by the app) or a blend (an op)

    def _start_task(self, task: Task) -> dict[str, Any]:
        self._require_idle()
        self.status, self.step, self.finish_reason, self.task = Status.PROJECTING, 0, None, task
        self.drag += 1  # runs (drags and projections) share one counter: frames carry it
        self._drag_before = Layout(tuple(self.pairs.values()), self.mask)
        self._drag_by = task.by
        return {"status": self.status.value, "step": 0, "drag": self.drag, "task": task.to_wire()}

    def start_upload(self, upload: UploadInfo, method: str, max_steps: int) -> list[Outgoing]:
        """A validated, stored upload: project it (status projecting). Returns the ``upload`` op and
        the ``status`` message. Raises ProtocolError ``busy`` (nothing changes) while not idle."""
        if method not in ("encoder", "optimize"):
            raise ValueError(f"unknown projection method {method!r}")
        if (upload.w, upload.h) != (self.image.w, self.image.h):
            raise ValueError(
                f"the upload is {upload.w}x{upload.h}; the room's image {self.image.w}x{self.image.h}"
            )
        steps = 0 if method == "encoder" else max(1, min(max_steps, self.limits.max_project_steps))
        patch = self._start_task(Task(TaskKind.UPLOAD, method, steps, target=upload.key))
        self.upload = upload
        patch["upload"] = upload.to_wire()
        return [self._op("upload", None, None, patch), self._status_message(None)]

    def _op_blend(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        self._require_idle()
        if not self.mask.has_flexible:
            raise ProtocolError("no_region")
        steps = min(msg.get("steps", self.limits.blend_steps), self.limits.max_project_steps)
        if msg["source"] == "upload":
            if self.upload is None:
                raise ProtocolError("no_upload")
            if "seed" in msg or "truncation" in msg:
                raise ProtocolError("invalid_field", "seed: only with source seed", field="seed")
            task = Task(
                TaskKind.BLEND, "optimize", steps, target=self.upload.key, region=self.mask, by=member.id
            )
        else:
            if "seed" not in msg:
                raise ProtocolError("invalid_field", "seed: missing (source seed)", field="seed")
            truncation = msg.get("truncation", self.image.truncation)
            task = Task(
                TaskKind.BLEND,
                "optimize",
                steps,
                source_seed=msg["seed"],
                source_truncation=truncation,
                region=self.mask,
                by=member.id,
            )
        return self._start_task(task)

    def _op_new_image(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        self._require_idle()
        image = replace(
            self.image, seed=msg["seed"], truncation=msg.get("truncation", self.image.truncation), latent=None
        )
        return self.commit_image(image, "new_image", member.id)

    def _op_undo(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        self._require_idle()
        if not self.history.can_undo:
            raise ProtocolError("nothing_to_undo")
        return self._restore(*self.history.undo())

    def _op_redo(self, member: Member, msg: dict[str, Any]) -> dict[str, Any]:
        self._require_idle()
        if not self.history.can_redo:
            raise ProtocolError("nothing_to_redo")
        return self._restore(*self.history.redo())

    def _restore(self, image: ImageInfo, layout: Layout) -> dict[str, Any]:
        rev = self.version + 1
        self.pairs = {p.id: replace(p, handle_rev=rev) for p in layout.pairs}
        self.mask = layout.mask or self.mask.cleared()
        self._set_image(image)
        self.history_dirty = True
        return {
            "image": self.image.to_wire(),
            "pairs": pairs_to_wire(list(self.pairs.values())),
            "mask": self.mask.to_wire(),
            "history": self.history.to_wire(),
        }

    def _set_image(self, image: ImageInfo) -> None:
        self.image = image
        self.image_rev += 1
        self.render_pending = True
        self.latest_frame = None  # a late joiner must not see the old image

    def commit_image(self, image: ImageInfo, kind: str = "upload", by: str | None = None) -> dict[str, Any]:
        """Commit a new image to the history (new_image, or an upload/projection the app made),
        clearing points and mask. Returns the patch. Refused with ``busy`` while a drag runs.
        For a server-made commit, wrap it: ``room.server_op("commit", room.commit_image(...))``."""
        self._require_idle()
        if (image.w, image.h) != (self.image.w, self.image.h):
            raise ValueError("an image of another size needs a new room")
        before = Layout(tuple(self.pairs.values()), self.mask)
        self.pairs = {}
        self.mask = self.mask.cleared()
        self.step = 0
        self.history.commit(HistoryEntry(kind, image, before=before, after=Layout(), by=by))
        self.history_dirty = True
        self._set_image(image)
        return {
            "image": self.image.to_wire(),
            "pairs": [],
            "mask": self.mask.to_wire(),
            "step": 0,
            "history": self.history.to_wire(),
        }

    def server_op(self, name: str, patch: dict[str, Any]) -> list[Outgoing]:
        """Broadcast a state change the server made itself (by = null), e.g. ``commit``."""
        return [self._op(name, None, None, patch)]

    # presence and control messages (not versioned)

    def _on_set_name(self, member: Member, msg: dict[str, Any]) -> list[Outgoing]:
        if not msg["name"]:
            raise ProtocolError("invalid_field", "name: must not be empty", field="name")
        return self.presence.rename(member, msg["name"])

    def _on_cursor(self, member: Member, msg: dict[str, Any]) -> list[Outgoing]:
        return self.presence.cursor(member, msg["pos"])

    def flush_presence(self) -> list[Outgoing]:
        """Cursor positions held back by the throttle whose turn has come. Call it every
        1 / cursor_hz seconds or so (the latest position always goes out)."""
        return self.presence.flush()

    def _on_ack(self, member: Member, msg: dict[str, Any]) -> list[Outgoing]:
        member.acked_seq = max(member.acked_seq, msg["seq"])  # the connection's sender reads it
        return []

    def _on_ping(self, member: Member, msg: dict[str, Any]) -> list[Outgoing]:
        return [Outgoing({"t": "pong", "ref": msg.get("id"), "time": time.time()}, to=member.id)]

    # --- the worker's side ------------------------------------------------------------------

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
        reached target or the step cap turn the drag to stopping, a projection that is done turns
        to stopping too: the next engine_job() is FINISH."""
        if job.kind is JobKind.FINISH:
            raise ValueError("a FINISH job has no frame: call on_finished")
        if not self._current(job):
            return []  # the image changed or the drag ended meanwhile
        self.render_pending = False  # a step's frame shows the current image too
        if job.kind is JobKind.STEP:
            self.step = job.step + 1
            for pid, pos in (frame.handles or {}).items():
                p = self.pairs.get(pid)
                if p is not None and p.handle_rev <= job.version:
                    self.pairs[pid] = replace(p, handle=self._clamp(pos))
            ended = frame.reached or frame.done is not None or self.step >= self.params.max_steps
            if self.status is Status.RUNNING and ended:
                self.status = Status.STOPPING
                self.finish_reason = "reached" if frame.reached else "max_steps"
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
        self.status, self.finish_reason = Status.IDLE, None
        patch.update(status=self.status.value, step=self.step, pairs=pairs_to_wire(list(self.pairs.values())))
        out = [self._op("finish", None, None, patch), self._status_message(reason, message)]
        if reason == "error":
            out.append(Outgoing(error_message("engine_failed", message and f"drag failed: {message}")))
        return out

    def _end_task(self, latent: str | None, message: str | None) -> list[Outgoing]:
        """End the projection: commit ``latent`` as a history entry (unless it failed or never
        stepped), clear points and mask like any new image, back to idle."""
        task, reason = self.task, self.finish_reason or "stopped"
        assert task is not None
        patch: dict[str, Any] = {}
        if latent is not None and reason != "error":
            seed = self.image.seed if task.kind is TaskKind.BLEND else None
            image = replace(self.image, seed=seed, latent=latent)
            self.pairs, self.mask = {}, self.mask.cleared()
            self.history.commit(HistoryEntry(task.kind.value, image, self._drag_before, Layout(), task.by))
            self.history_dirty = True
            self.image = image  # the last frame shows it: no render needed
            self.image_rev += 1
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
        return out

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

    def _status_message(self, reason: str | None, message: str | None = None) -> Outgoing:
        msg = {
            "t": "status",
            "status": self.status.value,
            "reason": reason,
            "drag": self.drag,
            "step": self.step,
        }
        if message:
            msg["message"] = message[:512]
        return Outgoing(msg)
