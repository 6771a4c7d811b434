"""Pivotal tuning copies: a room's privately tuned generator, by the latent key of its image.

Pivotal tuning (``pti_steps > 0``). An upload projected with method ``optimize`` is followed by
``pti_steps`` pivotal tuning steps of a private copy of the generator (ordinary ticks of the same
session), while fewer than ``pti_max_rooms`` rooms hold a tuned copy (beyond, it projects without
and says so in the log). Its commit keeps the tuned copy for that room, keyed by the committed
latent key; every render, drag, PNG export and trajectory frame of that room's image with that key
uses it, and a drag committed from such an image maps its new key to the same copy (so undo/redo
in the chain render right). Other images (undo to before the upload) use the shared generator.
A room keeps one tuned copy (a later tuned upload replaces it); it is dropped when the room is
deleted. Tuned copies live in memory only: after a restart the room renders with the shared
generator, and the latent download stays the latent alone.
"""

from __future__ import annotations

import logging

from server.engine.generator import Generator

log = logging.getLogger(__name__)


class TunedCopies:
    """Each room's tuned generator, by latent key. Worker thread only."""

    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, Generator]] = {}  # room -> latent key -> tuned G

    @property
    def rooms(self) -> set[str]:
        """Rooms holding a tuned copy."""
        return set(self._rooms)

    def get(self, room: str, latent: str) -> Generator | None:
        """The room's tuned generator for a latent key (None: that image uses the shared one)."""
        return self._rooms.get(room, {}).get(latent)

    def keep(self, room: str, key: str, tuned: Generator) -> None:
        """After a tuned projection's commit: the room's tuned copy, for that latent key (it
        replaces the room's earlier one), without gradients or optimiser state."""
        tuned.requires_grad_(False)
        for p in tuned.parameters():
            p.grad = None
        self._rooms[room] = {key: tuned}
        mb = sum(p.numel() * p.element_size() for p in tuned.parameters()) / 2**20
        log.info("room %s: keeps a tuned generator (%.1f MB)", room, mb)

    def follow(self, room: str, key: str, generator: Generator | None) -> None:
        """A drag committed latent ``key`` from an image of the room: when it ran on the room's
        tuned copy, the new key maps to that copy too."""
        tuned = self._rooms.get(room)
        if tuned is not None and generator is not None and any(g is generator for g in tuned.values()):
            tuned[key] = generator

    def forget(self, live: frozenset[str]) -> None:
        """Drop the copies of rooms that no longer exist."""
        for gone in set(self._rooms) - live:
            self._rooms.pop(gone, None)
