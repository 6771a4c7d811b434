"""What nodes say to each other through Redis (sans-I/O: bytes in, values out).

**Room channel** ``<prefix>:room:<id>:out`` (pub/sub, owner -> every node with members in the
room). Each payload is a 4-byte header length, a msgpack header, then (for ``out``) the message's
msgpack bytes exactly as the owner's room packed them: the frame (and its JPEG) is never decoded or
re-encoded on the way. Headers are lists; the first two fields are the owner's epoch and the
envelope's number in that epoch (1, 2, ...), so a relay sees both a new owner and a gap (pub/sub
is at-most-once) and resyncs its members.

- ``["o", epoch, seq, to, exclude, kind, meta]`` + bytes: an ``Outgoing`` (``to``/``exclude`` as
  the core's: ALL, EDITORS or a member id), ``meta`` the few fields a sender looks at (t, seq, op,
  ev, id);
- ``["j", epoch, seq, conn, member, session, role]``: a relay's connection ``conn`` joined;
- ``["r", epoch, seq, conn, close, reason]``: its join was refused (a close code name);
- ``["c", epoch, seq, member, session, close]``: close that member's connection.

**Room stream** ``<prefix>:room:<id>:in`` (relays -> the owner, in order, kept while both live):
entries ``{k: "j", node, conn, hello}`` (join), ``{k: "m", node, conn, member, data}`` (a message),
``{k: "l", node, conn, member, session}`` (left). **Node stream** ``<prefix>:node:<id>:in``:
``{k: "claim", room}`` (take this room: you were chosen for it); ``{k: "archive", room, reply}``
(archive this room if nobody is in it, to make space for its client's new room; the answer, ``1``
or ``0``, is pushed to the list ``reply``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgpack

from server.core.outgoing import Kind, Outgoing

META_KEYS = ("t", "seq", "op", "ev", "id")  # what fanout.Sender reads of a message besides its bytes
_LEN = struct.Struct(">I")


class WireError(ValueError):
    """A payload that is not one of ours (a bug or a foreign publisher): ignored with a log line."""


@dataclass(frozen=True)
class Envelope:
    """One message on a room channel (see the module docstring)."""

    kind: str  # "o", "j", "r", "c"
    epoch: int
    seq: int
    fields: tuple[Any, ...]
    data: bytes = b""

    def outgoing(self) -> Outgoing:
        """An ``o`` envelope as the Outgoing a local sender takes (the same bytes, packed once)."""
        to, exclude, kind, meta = self.fields
        return Outgoing(meta, to, exclude, Kind(kind), self.data)


def pack(header: list[Any], data: bytes = b"") -> bytes:
    head = msgpack.packb(header, use_bin_type=True)
    return _LEN.pack(len(head)) + head + data


def unpack(payload: bytes) -> Envelope:
    try:
        (n,) = _LEN.unpack_from(payload)
        header = msgpack.unpackb(payload[4 : 4 + n], raw=False)
        kind, epoch, seq, *fields = header
    except (struct.error, ValueError, TypeError, msgpack.UnpackException) as e:
        raise WireError(f"unreadable envelope: {e}") from None
    if kind not in ("o", "j", "r", "c") or not isinstance(epoch, int) or not isinstance(seq, int):
        raise WireError(f"unknown envelope {kind!r}")
    return Envelope(kind, epoch, seq, tuple(fields), bytes(payload[4 + n :]) if kind == "o" else b"")


def out_envelope(epoch: int, seq: int, out: Outgoing) -> bytes:
    meta = {k: out.msg[k] for k in META_KEYS if k in out.msg}
    return pack(["o", epoch, seq, out.to, out.exclude, out.kind.value, meta], out.data)


def joined_envelope(epoch: int, seq: int, conn: str, member: str, session: int, role: str) -> bytes:
    return pack(["j", epoch, seq, conn, member, session, role])


def refused_envelope(epoch: int, seq: int, conn: str, close: str, reason: str = "") -> bytes:
    return pack(["r", epoch, seq, conn, close, reason[:200]])


def close_envelope(epoch: int, seq: int, member: str, session: int, close: str) -> bytes:
    return pack(["c", epoch, seq, member, session, close])


# --- stream entries -------------------------------------------------------------------------------


def join_entry(node: str, conn: str, hello: bytes) -> dict[str, bytes | str]:
    return {"k": "j", "node": node, "conn": conn, "hello": hello}


def message_entry(node: str, conn: str, member: str, data: bytes) -> dict[str, bytes | str]:
    return {"k": "m", "node": node, "conn": conn, "member": member, "data": data}


def leave_entry(node: str, conn: str, member: str, session: int) -> dict[str, bytes | str]:
    return {"k": "l", "node": node, "conn": conn, "member": member, "session": str(session)}


def claim_entry(room: str) -> dict[str, bytes | str]:
    return {"k": "claim", "room": room}


def archive_entry(room: str, reply: str) -> dict[str, bytes | str]:
    return {"k": "archive", "room": room, "reply": reply}


def text(fields: dict[bytes, bytes], key: str) -> str:
    """A text field of a stream entry (redis-py gives bytes keys and values)."""
    return fields.get(key.encode(), b"").decode("utf-8", "replace")


def is_ack(data: bytes) -> int | None:
    """The seq of a client ``ack`` message (a relay answers those itself), else None."""
    if len(data) > 48:
        return None
    try:
        msg = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.UnpackException):
        return None
    if isinstance(msg, dict) and msg.get("t") == "ack" and type(msg.get("seq")) is int and len(msg) <= 3:
        return int(msg["seq"])
    return None
