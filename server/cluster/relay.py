"""The relay's side: this node's connections to rooms another node owns.

A relayed connection (:class:`RelaySession`) forwards its client's messages to the owner through
the room's stream, in order, and answers frame acks itself (credits are per hop). The relay
subscribes to the room's channel while it has members there and hands each envelope to the
local senders it names: the message bytes as the owner packed them, frames into each sender's
latest-frame-wins slot.

Resync. Pub/sub loses messages when a subscriber's connection drops (a Redis restart) and a room
may move to another owner (a node died, a lease was lost): the relay then joins every member of
the room again with the hello it first sent (a leave first, so the owner gives the same member id
back), and each client gets a fresh welcome and snapshot on its open connection (protocol.md: a
snapshot replaces everything). Envelope numbers tell gaps; :meth:`Relay.watch` (every heartbeat)
tells owner changes and orphaned rooms.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from server.cluster import wire
from server.cluster.config import ClusterConfig
from server.cluster.redisio import Forwarder
from server.core.members import JoinRefused
from server.core.outgoing import ALL, EDITORS, Outgoing
from server.core.ratelimit import ConnectionLimiter
from server.storage.manager import RoomGone

log = logging.getLogger(__name__)
MAX_BUFFER = 256  # client messages held while a member rejoins


class LocalSender(Protocol):
    """What a relay needs of a connection's sender (the edge's ``fanout.Sender``)."""

    def put(self, out: Outgoing) -> None: ...

    def ack(self, seq: int) -> None: ...

    def close(self, close: str, flush: bool = True) -> None: ...

    def reset_credits(self) -> None: ...


@dataclass(eq=False)
class RelaySession:
    """One local connection to a room owned elsewhere."""

    conn: str
    room: str
    hello: bytes
    sender: LocalSender
    member: str | None = None  # None while (re)joining
    session: int = 0
    role: str = "viewer"
    epoch: int = -1  # the owner epoch it joined under
    limiter: ConnectionLimiter = field(default_factory=ConnectionLimiter)  # strikes for text frames
    pending: asyncio.Future[None] | None = None
    buffer: list[bytes] = field(default_factory=list)
    closed: bool = False


@dataclass
class RelayRoom:
    id: str
    owner: str | None  # the node the sessions joined through
    sessions: dict[str, RelaySession] = field(default_factory=dict)
    epoch: int = -1  # newest envelope epoch seen
    seq: int = 0  # ... and its number
    subscribed: asyncio.Future[None] | None = None


class Relay:
    """This node's relayed connections, by room."""

    def __init__(
        self,
        cfg: ClusterConfig,
        r: aioredis.Redis,
        forwarder: Forwarder,
        owner_of: Callable[[str], Awaitable[str | None]],
        place: Callable[[str], Awaitable[object]],
    ) -> None:
        self.cfg, self.r, self.forwarder = cfg, r, forwarder
        self.owner_of, self.place = owner_of, place
        self.rooms: dict[str, RelayRoom] = {}
        self._conns = itertools.count(1)
        self._pubsub: aioredis.client.PubSub | None = None
        self._channels: dict[str, str] = {}  # channel -> room id
        self._ready = asyncio.Event()
        self.delivered = self.resyncs = 0
        self.grace_until = 0.0  # loop time before which orphaned rooms are not claimed

    # --- sessions -----------------------------------------------------------------------------

    async def join(self, room_id: str, owner: str, hello: bytes, sender: LocalSender) -> RelaySession:
        """Join through the owner; returns once it answered (raises JoinRefused)."""
        room = self.rooms.get(room_id)
        if room is None:
            room = self.rooms[room_id] = RelayRoom(room_id, owner)
        s = RelaySession(f"{self.cfg.node_id}/{next(self._conns)}", room_id, hello, sender)
        room.sessions[s.conn] = s
        try:
            await asyncio.wait_for(self._subscribe(room), self.cfg.join_timeout_s)
            s.pending = asyncio.get_running_loop().create_future()
            self.forwarder.put(
                self.cfg.room_stream(room_id), wire.join_entry(self.cfg.node_id, s.conn, hello)
            )
            await asyncio.wait_for(asyncio.shield(s.pending), self.cfg.join_timeout_s)
        except JoinRefused:
            self._forget(s)
            raise
        except (TimeoutError, RedisError, OSError) as e:
            self._forget(s)
            log.warning("cluster: room %s: joining through node %s failed: %r", room_id, owner, e)
            raise JoinRefused("internal_error", "the room's node did not answer") from None
        finally:
            s.pending = None
        return s

    def send(self, s: RelaySession, data: bytes) -> None:
        """A client message: acks are answered here, the rest go to the owner in order."""
        seq = wire.is_ack(data)
        if seq is not None:
            s.sender.ack(seq)
            return
        if s.member is None:
            if len(s.buffer) < MAX_BUFFER:
                s.buffer.append(data)
            return
        entry = wire.message_entry(self.cfg.node_id, s.conn, s.member, data)
        self.forwarder.put(self.cfg.room_stream(s.room), entry)

    def leave(self, s: RelaySession) -> None:
        if s.member is not None:
            entry = wire.leave_entry(self.cfg.node_id, s.conn, s.member, s.session)
            self.forwarder.put(self.cfg.room_stream(s.room), entry)
        self._forget(s)

    def _forget(self, s: RelaySession) -> None:
        s.closed = True
        room = self.rooms.get(s.room)
        if room is None:
            return
        room.sessions.pop(s.conn, None)
        if not room.sessions:
            del self.rooms[s.room]
            asyncio.get_running_loop().create_task(self._unsubscribe(s.room))

    # --- resync -------------------------------------------------------------------------------

    def resync(self, room: RelayRoom, why: str) -> None:
        """Join every member of the room again (a fresh welcome and snapshot for each)."""
        if not room.sessions:
            return
        self.resyncs += 1
        log.info("cluster: room %s: resyncing %d relayed member(s) (%s)", room.id, len(room.sessions), why)
        stream = self.cfg.room_stream(room.id)
        for s in room.sessions.values():
            if s.member is not None:
                self.forwarder.put(stream, wire.leave_entry(self.cfg.node_id, s.conn, s.member, s.session))
            s.member, s.epoch = None, -1
            self.forwarder.put(stream, wire.join_entry(self.cfg.node_id, s.conn, s.hello))

    def resync_all(self, why: str) -> None:
        for room in list(self.rooms.values()):
            self.resync(room, why)

    async def watch(self, now: float) -> None:
        """Every heartbeat: a room whose owner changed is resynced; an orphaned one is placed."""
        if not self._ready.is_set():
            return  # no subscription (Redis is away): nothing can be decided now
        for room in list(self.rooms.values()):
            try:
                owner = await self.owner_of(room.id)
            except (RedisError, OSError):
                return
            if owner is None:
                if now >= self.grace_until:
                    asyncio.get_running_loop().create_task(self._replace(room))
                continue
            if owner != room.owner:
                log.info("cluster: room %s moved from node %s to %s", room.id, room.owner, owner)
                room.owner = owner
                self.resync(room, "new owner")

    async def _replace(self, room: RelayRoom) -> None:
        """An orphaned room: have a node take it (the next watch resyncs to it); a deleted room's
        members are closed with room_closed."""
        try:
            await self.place(room.id)
        except RoomGone as e:
            for s in list(room.sessions.values()):
                s.sender.close("room_closed" if e.deleted else "room_not_found")
        except (JoinRefused, RedisError, OSError) as e:
            log.warning("cluster: room %s: no node took it yet: %s", room.id, e)

    # --- the room channels --------------------------------------------------------------------

    async def _subscribe(self, room: RelayRoom) -> None:
        channel = self.cfg.room_channel(room.id)
        if room.subscribed is None:
            room.subscribed = asyncio.get_running_loop().create_future()
            self._channels[channel] = room.id
            await self._ready.wait()
            assert self._pubsub is not None
            await self._pubsub.subscribe(channel)
        await asyncio.shield(room.subscribed)

    async def _unsubscribe(self, room_id: str) -> None:
        channel = self.cfg.room_channel(room_id)
        if room_id in self.rooms:
            return  # someone joined again meanwhile
        self._channels.pop(channel, None)
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.unsubscribe(channel)

    async def run(self) -> None:
        """Read the room channels, forever; after a lost connection, subscribe again and resync."""
        first = True
        while True:
            self._pubsub = self.r.pubsub()
            try:
                await self._pubsub.subscribe(self.cfg.node_stream(self.cfg.node_id) + ":ps")
                for channel in list(self._channels):
                    await self._pubsub.subscribe(channel)
                self._ready.set()
                if not first:
                    log.info("cluster: Redis subscription back")
                    self.grace_until = asyncio.get_running_loop().time() + self.cfg.redis_grace_s
                    self.resync_all("the Redis connection was lost")
                first = False
                while True:
                    msg = await self._pubsub.get_message(ignore_subscribe_messages=False, timeout=1.0)
                    if msg is not None:
                        self._on_message(msg)
            except (RedisError, OSError) as e:
                self._ready.clear()
                log.warning("cluster: Redis subscription lost (%s); reconnecting", e)
            finally:
                pubsub, self._pubsub = self._pubsub, None
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(0.25)

    def _on_message(self, msg: dict) -> None:
        channel = msg["channel"].decode()
        room = self.rooms.get(self._channels.get(channel, ""))
        if room is None:
            return
        if msg["type"] == "subscribe":
            if room.subscribed is not None and not room.subscribed.done():
                room.subscribed.set_result(None)
            return
        if msg["type"] != "message":
            return
        try:
            env = wire.unpack(msg["data"])
        except wire.WireError as e:
            log.warning("cluster: room %s: %s", room.id, e)
            return
        if env.epoch == room.epoch and env.seq != room.seq + 1:
            lost = env.seq - room.seq - 1
            room.seq = env.seq
            self.resync(room, f"lost {lost} message(s)")
            return
        if env.epoch >= room.epoch:
            room.epoch, room.seq = env.epoch, env.seq
        self._deliver(room, env)

    def _deliver(self, room: RelayRoom, env: wire.Envelope) -> None:
        if env.kind == "o":
            to, exclude = env.fields[0], env.fields[1]
            out: Outgoing | None = None
            for s in room.sessions.values():
                if s.member is None or s.epoch != env.epoch or s.member == exclude:
                    continue
                if to == ALL or (to == EDITORS and s.role == "editor") or to == s.member:
                    out = out or env.outgoing()
                    s.sender.put(out)
                    self.delivered += 1
            return
        if env.kind in ("j", "r"):
            s = room.sessions.get(env.fields[0])
            if s is None:
                if env.kind == "j" and str(env.fields[0]).startswith(self.cfg.node_id + "/"):
                    # our connection left (or gave up waiting) before the owner answered: leave
                    conn, member, session = env.fields[0], env.fields[1], int(env.fields[2])
                    entry = wire.leave_entry(self.cfg.node_id, conn, member, session)
                    self.forwarder.put(self.cfg.room_stream(room.id), entry)
                return
            if env.kind == "r":
                if s.pending is not None and not s.pending.done():
                    s.pending.set_exception(JoinRefused(env.fields[1], env.fields[2]))
                else:
                    s.sender.close(env.fields[1])
                return
            s.member, s.session, s.role, s.epoch = env.fields[1], int(env.fields[2]), env.fields[3], env.epoch
            s.sender.reset_credits()  # a new owner numbers frames anew
            if s.pending is not None and not s.pending.done():
                s.pending.set_result(None)
            buffered, s.buffer = s.buffer, []
            for data in buffered:
                self.send(s, data)
            return
        if env.kind == "c":
            member, session, close = env.fields
            for s in room.sessions.values():
                if s.member == member and s.session == session:
                    s.sender.close(close)
