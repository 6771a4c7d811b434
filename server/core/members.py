"""Presence: who is connected to a room, their colours, names and throttled cursors.

Kept apart from the edit state: nothing here is versioned or persisted (the room keeps the
member counter, so that ids are never reused, and the editors it remembers by their browser's
secret, see ``Room.join``). Editors are listed; viewers are only counted.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from server.core.limits import RoomLimits
from server.core.outgoing import ALL, EDITORS, Kind, Outgoing
from server.core.ratelimit import ConnectionLimiter
from server.core.state import Point

# 12 distinct colours (Sasha Trubetskoy's list), readable on light and dark images
PALETTE = (
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#bfef45",
    "#469990",
    "#9a6324",
    "#800000",
    "#000075",
)


@dataclass(eq=False)
class Member:
    """One connection's identity in a room. ``session`` tells connections apart when a member
    reconnects with the same client_id (the newest session owns the member)."""

    id: str
    name: str
    colour: str
    role: str  # "editor" or "viewer"
    session: int
    limiter: ConnectionLimiter
    client_id: str | None = None
    secret_hash: str | None = None  # the identity the room remembers this editor by (Room.join)
    cursor: Point | None = None
    cursor_sent_at: float = -math.inf
    cursor_pending: bool = False  # a cursor position arrived too soon after the last broadcast
    acked_seq: int = 0  # newest frame seq the client acknowledged (frame pacing)

    @property
    def is_editor(self) -> bool:
        return self.role == "editor"

    def to_wire(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "colour": self.colour, "role": self.role}


@dataclass
class KnownClients:
    """client_id -> (member id, colour) of recent members, so a reconnect keeps its identity."""

    max_len: int = 256
    _map: OrderedDict[str, tuple[str, str]] = field(default_factory=OrderedDict)

    def get(self, client_id: str | None) -> tuple[str, str] | None:
        return self._map.get(client_id) if client_id else None

    def remember(self, client_id: str | None, member_id: str, colour: str) -> None:
        if not client_id:
            return
        self._map[client_id] = (member_id, colour)
        self._map.move_to_end(client_id)
        while len(self._map) > self.max_len:
            self._map.popitem(last=False)


def pick_colour(in_use: set[str], number: int, reserved: set[str] | frozenset[str] = frozenset()) -> str:
    """The first palette colour nobody present uses, preferring those not ``reserved`` (kept for
    remembered editors who may come back); when all are taken, cycle by member number."""
    for avoid in (in_use | reserved, in_use):
        for c in PALETTE:
            if c not in avoid:
                return c
    return PALETTE[number % len(PALETTE)]


class JoinRefused(Exception):
    """A hello was refused; close the connection with ``close_spec(close)``."""

    def __init__(self, close: str, detail: str = "") -> None:
        self.close = close
        super().__init__(f"{close}: {detail}" if detail else close)


class Presence:
    """The connected members of one room, in join order."""

    def __init__(self, limits: RoomLimits, clock: Callable[[], float]) -> None:
        self.limits, self.clock = limits, clock
        self.members: dict[str, Member] = {}
        self._known = KnownClients(limits.remembered_clients)
        self._sessions = 0

    @property
    def editors(self) -> list[Member]:
        return [m for m in self.members.values() if m.is_editor]

    @property
    def spectators(self) -> int:
        return sum(1 for m in self.members.values() if not m.is_editor)

    def recipients(self, out: Outgoing) -> list[str]:
        """Member ids an Outgoing goes to."""
        if out.to == ALL:
            ids = list(self.members)
        elif out.to == EDITORS:
            ids = [m.id for m in self.editors]
        else:
            ids = [out.to] if out.to in self.members else []
        return [i for i in ids if i != out.exclude]

    def add(
        self,
        role: str,
        name: str,
        client_id: str | None,
        new_id: Callable[[], str],
        known: tuple[str, str] | None = None,
        reserved: set[str] | frozenset[str] = frozenset(),
    ) -> tuple[Member, list[Outgoing], int | None]:
        """Add a member: (member, presence messages for the others, session it replaced or None).
        ``known`` (member id, colour) is an identity the room recognised; else a known client_id
        gets its member id and colour back. A member rejoining while its old connection is still
        there replaces it. New members avoid ``reserved`` colours while others are free. Raises
        JoinRefused("room_full")."""
        out: list[Outgoing] = []
        known = known or self._known.get(client_id)
        old = self.members.get(known[0]) if known else None
        if old is not None:  # the same page reconnecting before its old connection was noticed dead
            dropped = self._drop(old)
            for o in dropped:  # the member's new connection must not hear its own leave
                o.exclude = old.id
            out += dropped
        cap = self.limits.max_editors if role == "editor" else self.limits.max_viewers
        count = len(self.editors) if role == "editor" else self.spectators
        if count >= cap:
            if old is not None:  # put the old connection back as it was
                self.members[old.id] = old
            raise JoinRefused("room_full", f"{count} {role}s present")
        member_id = known[0] if known else new_id()
        in_use = {m.colour for m in self.editors}
        colour = (
            known[1]
            if known and known[1] not in in_use
            else pick_colour(in_use, int(member_id[1:]), reserved)
        )
        self._sessions += 1
        member = Member(
            id=member_id,
            name=name or f"Guest {member_id[1:]}",
            colour=colour,
            role=role,
            session=self._sessions,
            limiter=ConnectionLimiter(self.limits.rates, self.clock),
            client_id=client_id,
        )
        self.members[member_id] = member
        self._known.remember(client_id, member_id, colour)
        if member.is_editor:
            out.append(
                Outgoing({"t": "presence", "ev": "join", "member": member.to_wire()}, exclude=member_id)
            )
        else:
            out.append(self._spectators_message(exclude=member_id))
        return member, out, old.session if old else None

    def remove(self, member_id: str, session: int) -> list[Outgoing]:
        """A connection closed. Ignored when that member has since joined on a newer session."""
        member = self.members.get(member_id)
        if member is None or member.session != session:
            return []
        return self._drop(member)

    def _drop(self, member: Member) -> list[Outgoing]:
        del self.members[member.id]
        if member.is_editor:
            return [Outgoing({"t": "presence", "ev": "leave", "id": member.id})]
        return [self._spectators_message()]

    def _spectators_message(self, exclude: str | None = None) -> Outgoing:
        msg = {"t": "presence", "ev": "spectators", "count": self.spectators}
        return Outgoing(msg, exclude=exclude, kind=Kind.PRESENCE)

    def rename(self, member: Member, name: str) -> list[Outgoing]:
        member.name = name
        return [Outgoing({"t": "presence", "ev": "rename", "id": member.id, "name": name})]

    def cursor(self, member: Member, pos: Point | None) -> list[Outgoing]:
        """Record a cursor; broadcast it now unless the member's throttle holds it back."""
        member.cursor, member.cursor_pending = pos, True
        return self._flush_cursor(member, self.clock())

    def flush(self) -> list[Outgoing]:
        """Cursor positions held back by the throttle whose turn has come."""
        now = self.clock()
        out: list[Outgoing] = []
        for m in self.members.values():
            if m.cursor_pending:
                out += self._flush_cursor(m, now)
        return out

    def _flush_cursor(self, member: Member, now: float) -> list[Outgoing]:
        if not member.cursor_pending or now - member.cursor_sent_at < 1.0 / self.limits.cursor_hz - 1e-3:
            return []
        member.cursor_pending, member.cursor_sent_at = False, now
        pos = list(member.cursor) if member.cursor is not None else None
        msg = {"t": "presence", "ev": "cursor", "id": member.id, "pos": pos}
        return [Outgoing(msg, exclude=member.id, kind=Kind.PRESENCE)]
