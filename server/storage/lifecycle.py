"""The rooms' life cycle, as rules and data (sans-I/O: no clock, no store; the manager applies them).

A room is **live** (loaded in memory, counted by the caps) or **archived** (only in the store). A
live room that nobody has been in for ``idle_archive_s`` (``unjoined_archive_s`` for a room nobody
has joined since it was created) is archived: saved, unloaded, marked archived in the store.
Opening an archived room (a websocket hello, a download with one of its capabilities) loads it
again, history, undo stacks and all. After a restart every room is archived until it is opened.

Caps count live rooms only. At ``max_rooms`` (or at ``max_rooms_per_client`` rooms created by one
client and still live) the least recently used idle room (nobody in it, no run) is archived to
make space; only when every such room is in use is the new room refused.

A room unused (nobody in it, no download) for ``delete_after_s`` is deleted with its history,
one that nobody ever joined after ``delete_unjoined_s``; an editor may delete a room at any time.
Deleted rooms' ids are remembered for a while, so that their links say so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Lifecycle:
    """When rooms are archived and deleted, and how many live rooms one client may create."""

    idle_archive_s: float = 300.0  # nobody in a live room for this long: it is archived (unloaded)
    unjoined_archive_s: float = 60.0  # ... for a room nobody has joined since it was created
    delete_after_s: float = 30 * 86400.0  # a room unused this long is deleted with its history; 0: never
    delete_unjoined_s: float = 86400.0  # ... a room nobody ever joined; 0: never
    max_rooms_per_client: int = 20  # live rooms one client (address) created; 0: no cap
    expire_every_s: float = 600.0  # how often the manager looks for rooms to delete

    def __post_init__(self) -> None:
        if not (self.idle_archive_s > 0 and self.unjoined_archive_s > 0 and self.expire_every_s > 0):
            raise ValueError("idle_archive_s, unjoined_archive_s and expire_every_s must be > 0")
        if min(self.delete_after_s, self.delete_unjoined_s) < 0 or self.max_rooms_per_client < 0:
            raise ValueError("delete_after_s, delete_unjoined_s and max_rooms_per_client must be >= 0")

    def archive_after(self, joined: bool) -> float:
        return self.idle_archive_s if joined else self.unjoined_archive_s

    def delete_cutoffs(self, now: float) -> tuple[float, float]:
        """Wall times before which an unused room, and a never-joined one, are deleted (-inf: never)."""
        unused = now - self.delete_after_s if self.delete_after_s else -math.inf
        unjoined = now - self.delete_unjoined_s if self.delete_unjoined_s else -math.inf
        return unused, unjoined


@dataclass
class LiveRoom:
    """What the manager knows of a live room's life (wall-clock times)."""

    idle_since: float | None  # when its last member left (or it was loaded); None: someone is in it
    joined: bool  # someone has joined it (ever; persisted)
    creator: str | None = None  # the client that created it (since then live); None: reopened

    def archive_due(self, now: float, rules: Lifecycle) -> bool:
        return self.idle_since is not None and now - self.idle_since >= rules.archive_after(self.joined)


def least_recently_used(candidates: Iterable[tuple[str, LiveRoom]]) -> str | None:
    """The room to archive to make space: among idle ones (the caller passes only rooms nobody is
    in and no run uses), a never-joined one first, then the one idle the longest."""
    idle = [(life.joined, life.idle_since, rid) for rid, life in candidates if life.idle_since is not None]
    return min(idle)[2] if idle else None
