"""Caps for rooms and their members, one frozen dataclass the app fills from its settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from server.core.protocol_types import LIMITS
from server.core.ratelimit import RateBudgets


@dataclass(frozen=True)
class RoomLimits:
    max_rooms: int = 100  # rooms per server
    max_editors: int = 16  # editors connected to one room at once
    max_viewers: int = 256  # spectators connected to one room at once
    max_pairs: int = int(LIMITS["max_pairs"])  # point pairs per room (at most the protocol's 64)
    history_max: int = int(LIMITS["history_max"])  # committed image states kept per room
    cursor_hz: float = LIMITS["cursor_hz"]  # cursor broadcasts per member per second
    rates: RateBudgets = field(default_factory=RateBudgets)  # per-connection token buckets
    remembered_clients: int = 256  # client_ids per room that get their member id back on reconnect
    blend_steps: int = 60  # optimisation steps of a blend whose message names none
    max_project_steps: int = int(LIMITS["max_project_steps"])  # cap on a projection's or blend's steps

    def __post_init__(self) -> None:
        if not 1 <= self.max_pairs <= LIMITS["max_pairs"]:
            raise ValueError(f"max_pairs must be in [1, {LIMITS['max_pairs']}]")
        if self.history_max < 1 or self.cursor_hz <= 0:
            raise ValueError("history_max must be >= 1 and cursor_hz > 0")
        if not 1 <= self.blend_steps <= self.max_project_steps <= LIMITS["max_project_steps"]:
            raise ValueError(f"need 1 <= blend_steps <= max_project_steps <= {LIMITS['max_project_steps']}")
        if min(self.max_rooms, self.max_editors, self.max_viewers) < 0:
            raise ValueError("room and member caps must be >= 0")
