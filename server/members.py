"""Presence: who is connected to a room, their colours, names and throttled cursors.

Kept apart from the edit state (nothing here is versioned or persisted, except the member
counter the room keeps so that ids are never reused).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

from server.ratelimit import ConnectionLimiter
from server.state import Point

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


def pick_colour(in_use: set[str], number: int) -> str:
    """The first palette colour nobody present uses; when all are taken, cycle by member number."""
    for c in PALETTE:
        if c not in in_use:
            return c
    return PALETTE[number % len(PALETTE)]
