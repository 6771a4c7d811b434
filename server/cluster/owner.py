"""The owner's side: the rooms this node ticks (it holds their leases), with the members other
nodes relay to them.

Relays append joins, messages and leaves to each room's stream; the owner reads every owned
room's stream in one blocking read and applies the entries in order to the room manager, exactly
as its own websocket connections do (so a remote member is an ordinary member of the room: rate
limits, roles, undo). What the room sends goes to the local connections (the edge's fan-out) and,
through :meth:`Owner.publish` (the fan-out's remote hook), to the room channel when a member on
another node should get it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from server.cluster import wire
from server.cluster.config import ClusterConfig
from server.cluster.redisio import Outbox
from server.core.members import JoinRefused
from server.core.outgoing import ALL, EDITORS, Disconnect, Kind, Outgoing
from server.core.protocol import ProtocolError, decode_hello
from server.core.room import Joined, Room
from server.storage.manager import RoomManager

log = logging.getLogger(__name__)


class LocalNode(Protocol):
    """What the cluster asks of the node it runs in (the edge implements it)."""

    def dispatch(self, room: Room, outs: list[Outgoing]) -> None:
        """Send a room's messages to its local connections (and, through the hook, the others)."""

    def close_member(self, room_id: str, member_id: str, close: str) -> None:
        """Close a local connection of the room (a CLOSE_CODES name)."""

    def close_room(self, room_id: str, close: str) -> None:
        """Close every local connection of the room."""

    def wake(self) -> None:
        """The worker should look for work."""

    def forget_gone(self) -> None:
        """The worker may drop the state of rooms that are no longer live."""

    def info(self) -> dict[str, Any]:
        """device, models, loaded, free, connections (for the announcement)."""


@dataclass
class RemoteMember:
    node: str
    conn: str
    session: int
    role: str


@dataclass
class OwnedRoom:
    id: str
    epoch: int  # the fencing epoch this node holds
    last_id: str  # the stream position read so far
    remote: dict[str, RemoteMember] = field(default_factory=dict)  # member id -> where it is

    @property
    def remote_editors(self) -> bool:
        return any(m.role == "editor" for m in self.remote.values())


class Owner:
    """The rooms this node owns and their remote members."""

    def __init__(
        self,
        cfg: ClusterConfig,
        r: aioredis.Redis,
        manager: RoomManager,
        local: LocalNode,
        outbox: Outbox,
        on_claim: Callable[[str], None],
        on_archive: Callable[[str, str], None] = lambda room, reply: None,
    ) -> None:
        self.cfg, self.r, self.manager, self.local, self.outbox = cfg, r, manager, local, outbox
        self.on_claim = on_claim  # another node asked this one to take a room
        self.on_archive = on_archive  # ... to archive one of its rooms (room, reply list)
        self.rooms: dict[str, OwnedRoom] = {}
        self._node_last = "0-0"  # the node stream position (set to Redis' clock at start)
        self.applied = 0

    # --- rooms --------------------------------------------------------------------------------

    def add(self, room_id: str, epoch: int, start_id: str) -> None:
        self.rooms[room_id] = OwnedRoom(room_id, epoch, start_id)

    def remove(self, room_id: str) -> OwnedRoom | None:
        return self.rooms.pop(room_id, None)  # what it queued for the relays still goes out

    # --- publishing (the fan-out's remote hook) -----------------------------------------------

    def publish(self, room: Room, outs: list[Outgoing]) -> None:
        """Publish the messages some member on another node should get, in order."""
        owned = self.rooms.get(room.id)
        if owned is None or not owned.remote:
            return
        channel = self.cfg.room_channel(room.id)
        for out in outs:
            if out.to == ALL or (out.to == EDITORS and owned.remote_editors) or out.to in owned.remote:
                self.outbox.put(channel, owned.epoch, _builder(out), frame=out.kind is Kind.FRAME)

    def _envelope(self, room_id: str, build: Callable[[int, int], bytes]) -> None:
        owned = self.rooms.get(room_id)
        if owned is not None:
            self.outbox.put(self.cfg.room_channel(room_id), owned.epoch, build)

    def joined_locally(self, room_id: str, joined: Joined) -> None:
        """A local connection joined: if it took over a member id held on another node, that
        connection is closed with ``replaced``."""
        owned = self.rooms.get(room_id)
        old = None if owned is None else owned.remote.get(joined.member_id)
        if old is not None:
            self._close_remote(room_id, joined.member_id, old, "replaced")

    def _close_remote(self, room_id: str, member: str, rm: RemoteMember, close: str) -> None:
        self._envelope(room_id, lambda e, s: wire.close_envelope(e, s, member, rm.session, close))
        owned = self.rooms.get(room_id)
        if owned is not None and owned.remote.get(member) is rm:
            del owned.remote[member]

    # --- reading the streams ------------------------------------------------------------------

    async def run(self) -> None:
        """Read the owned rooms' streams and this node's inbox, forever."""
        node_stream = self.cfg.node_stream(self.cfg.node_id)
        while True:
            streams = {node_stream: self._node_last}
            names = {}
            for owned in self.rooms.values():
                key = self.cfg.room_stream(owned.id)
                streams[key], names[key] = owned.last_id, owned.id
            try:
                found = await self.r.xread(streams, block=self.cfg.read_block_ms, count=512)
            except (RedisError, OSError) as e:
                log.debug("cluster: reading streams failed: %s", e)
                await asyncio.sleep(0.25)
                continue
            for stream, entries in found or []:
                key = stream.decode()
                for entry_id, fields in entries:
                    eid = entry_id.decode()
                    if key == node_stream:
                        self._node_last = eid
                        k = wire.text(fields, "k")
                        if k == "claim":
                            self.on_claim(wire.text(fields, "room"))
                        elif k == "archive":
                            self.on_archive(wire.text(fields, "room"), wire.text(fields, "reply"))
                        continue
                    owned = self.rooms.get(names.get(key, ""))
                    if owned is None:
                        continue
                    owned.last_id = eid
                    try:
                        self.apply(owned, fields)
                    except Exception:  # a bug: log it, keep reading
                        log.exception("cluster: room %s: applying a relayed entry failed", owned.id)

    def apply(self, owned: OwnedRoom, fields: dict[bytes, bytes]) -> None:
        """One relayed entry: a join, a message or a leave."""
        kind, node, conn = wire.text(fields, "k"), wire.text(fields, "node"), wire.text(fields, "conn")
        room_id = owned.id
        self.applied += 1
        if kind == "j":
            self._join(owned, node, conn, fields.get(b"hello", b""))
            return
        member = wire.text(fields, "member")
        rm = owned.remote.get(member)
        if rm is None or rm.conn != conn or rm.node != node:
            return  # a connection that has left, been replaced, or joined another owner
        room = self.manager.get(room_id)
        if room is None:
            return
        if kind == "l":
            del owned.remote[member]
            self.local.dispatch(room, self.manager.leave(room_id, member, rm.session))
        elif kind == "m":
            try:
                outs = self.manager.receive(room_id, member, fields.get(b"data", b""))
            except Disconnect as d:
                self.local.dispatch(room, d.messages)
                self._close_remote(room_id, member, rm, d.close)
                self.local.dispatch(room, self.manager.leave(room_id, member, rm.session))
                return
            if outs:
                self.local.dispatch(room, outs)
                self.local.wake()

    def _join(self, owned: OwnedRoom, node: str, conn: str, raw: bytes) -> None:
        room_id = owned.id
        try:
            hello = decode_hello(raw)
            joined = self.manager.join(room_id, hello)
        except (ProtocolError, JoinRefused) as e:
            close, reason = e.close or "bad_hello", str(e)
            log.info("cluster: room %s: join from node %s refused: %s", room_id, node, close)
            self._envelope(room_id, lambda ep, s: wire.refused_envelope(ep, s, conn, close, reason))
            return
        room = self.manager.get(room_id)
        assert room is not None
        mid = joined.member_id
        old = owned.remote.get(mid)
        if joined.replaced_session is not None:  # that member was connected: close the old one
            if old is None:
                self.local.close_member(room_id, mid, "replaced")
            elif old.conn != conn:
                self._close_remote(room_id, mid, old, "replaced")
        owned.remote[mid] = RemoteMember(node, conn, joined.session, joined.role)
        role, session = joined.role, joined.session
        self._envelope(room_id, lambda ep, s: wire.joined_envelope(ep, s, conn, mid, session, role))
        self.local.dispatch(room, joined.messages)
        self.local.wake()

    # --- nodes that died ----------------------------------------------------------------------

    def drop_nodes(self, alive: set[str]) -> int:
        """Members relayed by nodes no longer alive leave their rooms. Returns how many left."""
        n = 0
        for owned in list(self.rooms.values()):
            gone = [(mid, rm) for mid, rm in owned.remote.items() if rm.node not in alive]
            room = self.manager.get(owned.id)
            for mid, rm in gone:
                del owned.remote[mid]
                n += 1
                if room is not None:
                    self.local.dispatch(room, self.manager.leave(owned.id, mid, rm.session))
        if n:
            log.info("cluster: %d member(s) of nodes that stopped answering left their rooms", n)
        return n


def _builder(out: Outgoing) -> Callable[[int, int], bytes]:
    return lambda epoch, seq: wire.out_envelope(epoch, seq, out)
