"""Fan-out: one sender task per websocket connection, so one slow client never slows the others.

Each :class:`Sender` owns its socket's outgoing side and holds three things:

- a **bounded control queue** (``op``, ``status``, ``error``, ``welcome``, ``snapshot``, member
  joins/leaves, ``pong``): sent in order, never dropped. When it overflows, the client has
  fallen too far behind: the queue is discarded and the connection closed with ``too_slow``
  (4011); the client resyncs from the snapshot it gets when it reconnects;
- a **presence map** (cursors, spectator counts): latest value per key, sent after the control
  queue is empty (a cursor update that has not gone out yet is simply replaced);
- a **latest-frame-wins slot**: a new frame replaces the pending one. Frames are paced by the
  client's acks (protocol section 7): at most ``credits`` frames unacknowledged, so a tab that
  draws slowly, or a client that stopped reading, costs the server nothing but one slot.

Every send has a timeout (``send_timeout_s``): a send that blocks that long (the peer's TCP
window is shut) closes the connection with ``too_slow``. Messages are msgpack bytes packed
once per message (``Outgoing.data``) and shared by every connection.

Ordering: control before presence before frames. A pending frame is dropped when an ``op``
that replaces the image (new_image, undo, redo, commit) is queued, so nobody sees the old
image after the op; a pending cursor of a member is dropped when that member's ``leave`` is
queued. :class:`Hub` maps rooms and members to senders and dispatches a room's outgoing
messages. No Starlette here: the socket is anything with ``send_bytes`` and ``close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from server.core.outgoing import Kind, Outgoing
from server.core.protocol import close_spec
from server.core.protocol_types import LIMITS
from server.core.room import Room

log = logging.getLogger(__name__)

T = TypeVar("T")
IMAGE_OPS = frozenset({"new_image", "undo", "redo", "commit"})  # ops after which older frames are stale


class SendSocket(Protocol):
    """What a sender needs of a websocket (Starlette's WebSocket has both)."""

    async def send_bytes(self, data: bytes) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


class SenderState(StrEnum):
    OPEN = "open"  # accepting messages
    CLOSING = "closing"  # flushing the control queue (or not, when aborted), then closing
    CLOSED = "closed"  # the task has ended


@dataclass(frozen=True)
class SenderLimits:
    credits: int = int(LIMITS["frame_credits"])  # frames sent and not yet acknowledged, at most
    max_control: int = 256  # queued control messages; one more closes the connection (too_slow)
    send_timeout_s: float = 10.0  # one send may block this long
    close_timeout_s: float = 2.0  # flushing the control queue and the close frame, at most


@dataclass
class SenderStats:
    frames_sent: int = 0
    frames_replaced: int = 0  # pending frames overwritten by a newer one (latest wins)
    control_sent: int = 0
    presence_sent: int = 0
    presence_replaced: int = 0
    bytes_sent: int = 0


if hasattr(asyncio, "timeout"):  # Python 3.11+: a deadline without creating a task per await

    async def with_timeout(aw: Awaitable[T], seconds: float) -> T:
        async with asyncio.timeout(seconds):
            return await aw

else:  # pragma: no cover

    async def with_timeout(aw: Awaitable[T], seconds: float) -> T:
        return await asyncio.wait_for(aw, seconds)


class Sender:
    """The outgoing side of one connection. ``put``/``ack``/``close`` are synchronous and never
    block (call them from the event loop); ``start()`` runs the sending task."""

    def __init__(
        self,
        sock: SendSocket,
        limits: SenderLimits | None = None,
        name: str = "",
        on_closed: Callable[[Sender], None] | None = None,
    ) -> None:
        self.sock = sock
        self.limits = limits or SenderLimits()
        self.name = name  # for logs: "room/member"
        self.on_closed = on_closed  # called once when the task ends (e.g. to stop the receive loop)
        self.state = SenderState.OPEN
        self.stats = SenderStats()
        self.close_name: str | None = None  # CLOSE_CODES key the connection is closed with
        self.disconnected = False  # the peer went away (a send failed)
        self._control: deque[bytes] = deque()
        self._presence: OrderedDict[tuple, bytes] = OrderedDict()
        self._frame: tuple[int, bytes] | None = None  # (seq, bytes) waiting for a credit
        self._in_flight: deque[int] = deque()  # seqs of frames sent and not acknowledged
        self._flush = True
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- queueing (synchronous) ---------------------------------------------------------------

    def put(self, out: Outgoing) -> None:
        """Queue one message according to its kind (see the module docstring)."""
        if self.state is not SenderState.OPEN:
            return
        if out.kind is Kind.FRAME:
            if self._frame is not None:
                self.stats.frames_replaced += 1
            self._frame = (int(out.msg.get("seq", 0)), out.data)
        elif out.kind is Kind.PRESENCE:
            key = presence_key(out.msg)
            if self._presence.pop(key, None) is not None:
                self.stats.presence_replaced += 1
            self._presence[key] = out.data
        else:
            if len(self._control) >= self.limits.max_control:
                log.info("%s: control queue full (%d): closing too_slow", self.name, len(self._control))
                self.close("too_slow", flush=False)
                return
            self._control.append(out.data)
            t = out.msg.get("t")
            if t == "op" and out.msg.get("op") in IMAGE_OPS:
                self._frame = None
            elif t == "presence" and out.msg.get("ev") == "leave":
                self._presence.pop(("cursor", out.msg.get("id")), None)
        self._wake.set()

    def put_many(self, outs: list[Outgoing]) -> None:
        for out in outs:
            self.put(out)

    def ack(self, seq: int) -> None:
        """The client drew every frame up to ``seq``: return their credits."""
        returned = False
        while self._in_flight and self._in_flight[0] <= seq:
            self._in_flight.popleft()
            returned = True
        if returned and self._frame is not None:
            self._wake.set()

    def reset_credits(self) -> None:
        """Forget the frames in flight: the room's frames are numbered anew (a relayed connection
        whose room moved to another node), so the old numbers will never be acknowledged."""
        self._in_flight.clear()
        if self._frame is not None:
            self._wake.set()

    def close(self, close: str, flush: bool = True) -> None:
        """Close with a CLOSE_CODES name: after sending the queued control messages (``flush``),
        or at once (queues dropped). Idempotent: the first reason given wins."""
        close_spec(close)  # a bad name is a bug: fail here, not in the task
        if self.state is not SenderState.OPEN:
            if not flush:
                self._flush = False
                self._wake.set()
            return
        self.state = SenderState.CLOSING
        self.close_name = close
        self._flush = flush
        self._presence.clear()
        self._frame = None
        self._wake.set()
        if self._task is None:  # never started: nothing to flush
            self._finish()

    def stop(self) -> None:
        """End the task without a close frame (the peer is gone): pending messages are dropped."""
        if self.state is SenderState.OPEN:
            self.state, self._flush = SenderState.CLOSING, False
            self._presence.clear()
            self._frame = None
            self._wake.set()
            if self._task is None:
                self._finish()

    # --- state --------------------------------------------------------------------------------

    @property
    def credits(self) -> int:
        return self.limits.credits - len(self._in_flight)

    @property
    def pending(self) -> int:
        """Messages waiting (control + presence + frame)."""
        return len(self._control) + len(self._presence) + (self._frame is not None)

    @property
    def closed(self) -> bool:
        return self.state is SenderState.CLOSED

    # --- the task -----------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"sender {self.name}")
        return self._task

    async def wait(self, timeout: float | None = None) -> None:
        """Wait until the task has ended (cancel it after ``timeout``)."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _next(self) -> bytes | None:
        if self.state is SenderState.CLOSING:
            return self._control.popleft() if self._flush and self._control else None
        if self._control:
            self.stats.control_sent += 1
            return self._control.popleft()
        if self._presence:
            self.stats.presence_sent += 1
            return self._presence.popitem(last=False)[1]
        if self._frame is not None and self.credits > 0:
            seq, data = self._frame
            self._frame = None
            self._in_flight.append(seq)
            self.stats.frames_sent += 1
            return data
        return None

    async def _run(self) -> None:
        try:
            while True:
                data = self._next()
                if data is None:
                    if self.state is SenderState.CLOSING:
                        break
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                limit = self.limits.send_timeout_s
                if self.state is SenderState.CLOSING:
                    limit = min(limit, self.limits.close_timeout_s)
                try:
                    await with_timeout(self.sock.send_bytes(data), limit)
                except TimeoutError:
                    if self.state is SenderState.OPEN:
                        log.info("%s: a send blocked for %.1f s: closing too_slow", self.name, limit)
                        self.state, self.close_name = SenderState.CLOSING, "too_slow"
                    self._flush = False
                    break
                except Exception:  # the peer went away (Starlette raises several kinds)
                    self.disconnected = True
                    break
                self.stats.bytes_sent += len(data)
            if self.close_name is not None and not self.disconnected:
                spec = close_spec(self.close_name)
                # a stalled or vanished peer: give up, the app then drops the transport
                with contextlib.suppress(Exception):
                    await with_timeout(self.sock.close(spec.code, spec.reason), self.limits.close_timeout_s)
        finally:
            self._finish()

    def _finish(self) -> None:
        if self.state is SenderState.CLOSED:
            return
        self.state = SenderState.CLOSED
        self._control.clear()
        self._presence.clear()
        self._frame = None
        if self.on_closed is not None:
            try:
                self.on_closed(self)
            except Exception:  # never let a callback kill the loop
                log.exception("%s: on_closed failed", self.name)


def presence_key(msg: dict[str, Any]) -> tuple:
    """Coalescing key of a presence message: the newest value per key is the only one that matters."""
    ev = msg.get("ev")
    if ev == "spectators":
        return ("spectators",)
    return (ev, msg.get("id"))


class RemoteFanout(Protocol):
    """Where a room's messages for members on other nodes go (a cluster node; None: one node)."""

    def publish(self, room: Room, outs: list[Outgoing]) -> None: ...


class Hub:
    """Senders by room id and member id; dispatches a room's outgoing messages to them (and to
    ``remote``, the cluster, for the members connected to other nodes)."""

    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, Sender]] = {}
        self.remote: RemoteFanout | None = None

    def add(self, room_id: str, member_id: str, sender: Sender) -> Sender | None:
        """Register a member's sender; returns the sender it replaces (close that one)."""
        conns = self._rooms.setdefault(room_id, {})
        old = conns.get(member_id)
        conns[member_id] = sender
        return old if old is not sender else None

    def remove(self, room_id: str, member_id: str, sender: Sender) -> None:
        """Unregister, if ``sender`` is still the member's current one."""
        conns = self._rooms.get(room_id)
        if conns is not None and conns.get(member_id) is sender:
            del conns[member_id]
            if not conns:
                del self._rooms[room_id]

    def get(self, room_id: str, member_id: str) -> Sender | None:
        return self._rooms.get(room_id, {}).get(member_id)

    def senders(self, room_id: str | None = None) -> list[Sender]:
        if room_id is not None:
            return list(self._rooms.get(room_id, {}).values())
        return [s for conns in self._rooms.values() for s in conns.values()]

    def __len__(self) -> int:
        return sum(len(c) for c in self._rooms.values())

    def dispatch(self, room: Room, outs: list[Outgoing]) -> None:
        """Hand each message to the senders of its recipients (bytes packed once per message)."""
        if self.remote is not None:
            self.remote.publish(room, outs)
        conns = self._rooms.get(room.id)
        if not conns:
            return
        for out in outs:
            for member_id in room.recipients(out):
                sender = conns.get(member_id)
                if sender is not None:
                    sender.put(out)
