"""One collaborative room, server-authoritative and sans-I/O (no Starlette, no torch, no sockets).

The room applies members' messages in arrival order, stamps every applied edit with the next
room version, and returns the messages to send as :class:`Outgoing` values; the app sends them.
The worker drives drags through :meth:`Room.engine_job`, :meth:`Room.on_frame`,
:meth:`Room.on_finished` and :meth:`Room.on_error`; the room never holds tensors, only latent
keys. Time comes from an injected clock. Protocol: shared/protocol.md.

This module holds the room's state, its members and the dispatch of client messages; the
versioned operations are in :mod:`server.core.room_ops`, the worker's side (jobs, frames, the
end of a drag or projection) in :mod:`server.core.room_runs`.

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
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.core.ids import hash_token
from server.core.jobs import EngineJob, FrameResult, JobKind
from server.core.limits import RoomLimits
from server.core.members import JoinRefused, Member, Presence
from server.core.outgoing import Disconnect, Outgoing
from server.core.protocol import (
    PROTOCOL_VERSION,
    ProtocolError,
    decode,
    error_message,
    message_ref,
    parse_client,
)
from server.core.protocol_spec import CLIENT_MESSAGES
from server.core.protocol_types import LIMITS
from server.core.room_runs import RoomRuns
from server.core.state import (
    History,
    Layout,
    MemberRecord,
    Pair,
    RoomRecord,
    RunRecord,
    Status,
    Task,
    UploadInfo,
    pairs_to_wire,
)
from server.core.undo import UndoBook

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


class Room(RoomRuns):
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
        self.original = record.original or self.history.entries[0].image  # what reset returns to
        self._drag_before = Layout()
        self._drag_by: str | None = None
        self._run_started = 0.0  # wall clock when the running drag or projection started
        self._checkpoint: tuple[int, str, tuple[Pair, ...]] | None = None  # (step, latent key, pairs)
        self.interrupted: dict[str, Any] | None = None  # the last run, cut short by a crash
        # editors remembered by the hash of their browser's secret (persisted), oldest first
        self.remembered: dict[str, MemberRecord] = {m.secret_hash: m for m in record.members}
        self.members_dirty = False  # ... changed since the last save
        self.image_rev = 0
        self.render_pending = True  # no frame yet: the worker renders one
        self.frame_seq = 0
        self.latest_frame: Outgoing | None = None
        self.presence = Presence(self.limits, clock)  # who is connected (not persisted)
        self.members = self.presence.members  # member id -> Member, in join order
        self.dirty = False  # persistent state changed since the last save
        self.history_dirty = False  # ... and the history among it
        # each editor's own undo and redo stacks (persisted; see server.core.undo)
        self.undo = UndoBook.from_json(record.undo, self.limits.history_max, self.limits.remembered_clients)
        if record.run is not None:  # the server stopped without ending it: a crash
            self.recover_run(record.run)

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
            original=self.original,
            members=tuple(self.remembered.values()),
            run=self._run_record(),
            undo=self.undo.to_json(self.undo.dirty),  # the stacks that changed since the last save
        )

    def _run_record(self) -> RunRecord | None:
        """The run in progress as persisted (None when idle), with the drag's latest checkpoint."""
        if self.status is Status.IDLE:
            return None
        step, latent, pairs = self._checkpoint or (0, None, ())
        return RunRecord(
            kind="drag" if self.task is None else self.task.kind.value,
            drag=self.drag,
            by=self._drag_by,
            before=self._drag_before,
            step=step,
            latent=latent,
            pairs=pairs,
            started=self._run_started,
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
            "interrupted": self.interrupted,
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

    def join(self, role: str, name: str, client_id: str | None = None, secret: str | None = None) -> Joined:
        """Add a member (role already decided from the capability). Raises JoinRefused(room_full).

        An editor's ``secret`` (random per browser) is remembered by its hash: the browser that
        presents it again, after a reconnect or a restart, gets its member id, name (unless the
        hello names one) and colour back. While that member is connected from another page (a
        second tab of the browser), the newcomer is a member of its own."""
        known, secret_hash = None, None
        if secret and role == "editor":
            secret_hash = hash_token(f"{self.id}:{secret}")
            rec = self.remembered.get(secret_hash)
            if rec is not None:
                present = self.members.get(rec.id)
                if present is None or (client_id is not None and present.client_id == client_id):
                    known, name = (rec.id, rec.colour), name or rec.name
                else:
                    secret_hash = None
        reserved = {r.colour for r in self.remembered.values() if r.id not in self.members}
        member, out, replaced = self.presence.add(
            role, name, client_id, self._new_member_id, known=known, reserved=reserved
        )
        if secret_hash is not None:
            member.secret_hash = secret_hash
            self._remember(member)
        return Joined(member.id, member.session, role, out + self._welcome(member), replaced)

    def _remember(self, member: Member) -> None:
        """Keep (or refresh) a member's identity for its secret; the oldest go past the cap."""
        assert member.secret_hash is not None
        self.remembered.pop(member.secret_hash, None)
        self.remembered[member.secret_hash] = MemberRecord(
            member.id, member.secret_hash, member.name, member.colour, time.time()
        )
        while len(self.remembered) > self.limits.remembered_clients:
            del self.remembered[next(iter(self.remembered))]
        self.members_dirty = self.dirty = True

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
        if member.is_editor:
            out.append(Outgoing(self.undo.state_message(member.id), to=member.id))
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
            return self.handle(member, parse_client(raw, self.bounds)) + self._undo_messages()
        except ProtocolError as e:
            return self._refuse(member, e) + self._undo_messages()
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
            snap = None if t in ("undo", "redo") else self._undo_snapshot()
            patch = getattr(self, f"_op_{t}")(member, msg)
        except ProtocolError as e:
            e.ref = ref
            raise
        if snap is not None:  # the member's own action, for their undo (server.core.undo)
            self._record_action(member.id, t, msg, snap)
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

    # presence and control messages (not versioned)

    def _on_set_name(self, member: Member, msg: dict[str, Any]) -> list[Outgoing]:
        if not msg["name"]:
            raise ProtocolError("invalid_field", "name: must not be empty", field="name")
        out = self.presence.rename(member, msg["name"])
        if member.secret_hash is not None and member.secret_hash in self.remembered:
            self._remember(member)
        return out

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
