"""What the room core asks the app to send: a message, its recipients, and how it may be queued."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from server.core.protocol import encode

ALL = "all"  # every member (editors and viewers)
EDITORS = "editors"  # editors only


class Kind(StrEnum):
    """How a connection's sender treats a message."""

    CONTROL = "control"  # bounded FIFO, never dropped; overflow closes the connection (too_slow)
    FRAME = "frame"  # latest-wins slot, paced by the client's acks
    PRESENCE = "presence"  # cursors, spectator counts: may be dropped or coalesced under backpressure


@dataclass(eq=False)
class Outgoing:
    """One message for ``to`` (ALL, EDITORS or a member id), minus ``exclude`` (a member id).

    ``data`` packs the message once and caches the bytes, so the same object handed to many
    connections is encoded once; ``retarget`` makes a copy for other recipients sharing the bytes.
    """

    msg: dict[str, Any]
    to: str = ALL
    exclude: str | None = None
    kind: Kind = Kind.CONTROL
    _data: bytes | None = field(default=None, repr=False)

    @property
    def data(self) -> bytes:
        if self._data is None:
            self._data = encode(self.msg)
        return self._data

    def retarget(self, to: str, exclude: str | None = None) -> Outgoing:
        return Outgoing(self.msg, to, exclude, self.kind, self._data)

    def __repr__(self) -> str:
        t = self.msg.get("t")
        return f"Outgoing({t!r}, to={self.to!r}, exclude={self.exclude!r}, kind={self.kind.value})"


class Disconnect(Exception):
    """Close the connection: send ``messages`` (to that member) first, then close with
    ``close_spec(close)``'s code and reason (``close`` is a CLOSE_CODES key)."""

    def __init__(self, close: str, messages: list[Outgoing] | None = None) -> None:
        self.close = close
        self.messages = messages or []
        super().__init__(close)
