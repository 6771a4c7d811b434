"""Per-connection senders: latest-frame-wins, credits, bounded control queue, timeouts, the hub."""

from __future__ import annotations

import asyncio

import msgpack
import pytest

from server.core.outgoing import Kind, Outgoing
from server.edge.fanout import Hub, Sender, SenderLimits, SenderState
from tests.server.conftest import Harness


class FakeSocket:
    """Records what is sent; ``block()`` makes sends wait until ``unblock()`` (a stalled peer)."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.closed: tuple[int, str | None] | None = None
        self.open = asyncio.Event()
        self.open.set()

    def block(self) -> None:
        self.open.clear()

    def unblock(self) -> None:
        self.open.set()

    async def send_bytes(self, data: bytes) -> None:
        await self.open.wait()
        self.sent.append(msgpack.unpackb(data, raw=False))

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        await self.open.wait()
        self.closed = (code, reason)

    def types(self) -> list[str]:
        return [m["t"] for m in self.sent]


def frame(seq: int) -> Outgoing:
    return Outgoing({"t": "frame", "seq": seq, "jpeg": b"j"}, kind=Kind.FRAME)


def control(i: int) -> Outgoing:
    return Outgoing({"t": "op", "v": i, "op": "move_point"})


def cursor(member: str, x: float) -> Outgoing:
    return Outgoing({"t": "presence", "ev": "cursor", "id": member, "pos": [x, 1.0]}, kind=Kind.PRESENCE)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def started(sock: FakeSocket, **limits) -> Sender:
    s = Sender(sock, SenderLimits(**limits), name="test")
    s.start()
    await settle()
    return s


async def test_a_newer_frame_replaces_the_pending_one():
    """While the socket is busy, only the newest frame waits; older ones are never sent."""
    sock = FakeSocket()
    s = await started(sock, credits=100)
    sock.block()
    s.put(frame(1))
    await settle()  # frame 1 is now stuck in send
    for seq in range(2, 7):
        s.put(frame(seq))
    sock.unblock()
    await settle()
    assert [m["seq"] for m in sock.sent] == [1, 6]
    assert s.stats.frames_replaced == 4


async def test_frames_wait_for_credits_and_acks_return_them():
    """At most `credits` frames are unacknowledged; an ack releases the newest pending frame."""
    sock = FakeSocket()
    s = await started(sock, credits=2)
    for seq in (1, 2, 3, 4):
        s.put(frame(seq))
        await settle()
    assert [m["seq"] for m in sock.sent] == [1, 2]
    s.ack(1)
    await settle()
    assert [m["seq"] for m in sock.sent] == [1, 2, 4]
    s.ack(4)
    s.put(frame(5))
    await settle()
    assert [m["seq"] for m in sock.sent][-1] == 5


async def test_control_messages_go_first_in_order():
    """Control messages are sent in order before presence and before the pending frame."""
    sock = FakeSocket()
    s = await started(sock)
    sock.block()
    s.put(frame(1))
    await settle()
    s.put(frame(2))
    s.put(cursor("m2", 1.0))
    s.put(control(1))
    s.put(control(2))
    sock.unblock()
    await settle()
    assert sock.types() == ["frame", "op", "op", "presence", "frame"]
    assert [m.get("v") for m in sock.sent[1:3]] == [1, 2]


async def test_cursor_updates_coalesce_per_member():
    """Only the newest pending cursor position of each member is sent."""
    sock = FakeSocket()
    s = await started(sock)
    sock.block()
    s.put(control(1))
    await settle()
    for x in (1.0, 2.0, 3.0):
        s.put(cursor("m2", x))
    s.put(cursor("m3", 9.0))
    sock.unblock()
    await settle()
    cursors = [(m["id"], m["pos"][0]) for m in sock.sent if m["t"] == "presence"]
    assert cursors == [("m2", 3.0), ("m3", 9.0)]


async def test_image_ops_drop_the_stale_frame_and_leaves_drop_cursors():
    """After new_image/undo the old image's pending frame is dropped; a leave drops that cursor."""
    sock = FakeSocket()
    s = await started(sock)
    sock.block()
    s.put(control(1))
    await settle()
    s.put(frame(7))
    s.put(cursor("m2", 1.0))
    s.put(Outgoing({"t": "op", "v": 2, "op": "undo"}))
    s.put(Outgoing({"t": "presence", "ev": "leave", "id": "m2"}))
    sock.unblock()
    await settle()
    assert sock.types() == ["op", "op", "presence"]
    assert sock.sent[-1]["ev"] == "leave"


async def test_control_queue_overflow_closes_too_slow():
    """A client that falls max_control messages behind is closed with 4011 and its queue dropped."""
    sock = FakeSocket()
    closed = []
    s = Sender(sock, SenderLimits(max_control=8, close_timeout_s=0.2), on_closed=closed.append)
    s.start()
    await settle()
    sock.block()
    s.put(control(0))
    await settle()
    for i in range(1, 20):
        s.put(control(i))
    assert s.state is SenderState.CLOSING and s.close_name == "too_slow"
    sock.unblock()
    await s.wait(timeout=2)
    assert sock.closed is not None and sock.closed[0] == 4011
    assert len(sock.sent) == 1  # the queued messages were not flushed
    assert closed == [s]


async def test_a_send_that_blocks_too_long_closes_too_slow():
    """A send stuck longer than send_timeout_s ends the sender with too_slow, even if close stalls."""
    sock = FakeSocket()
    s = await started(sock, send_timeout_s=0.1, close_timeout_s=0.1)
    sock.block()
    s.put(control(1))
    await asyncio.wait_for(s.wait(), 2)
    assert s.closed and s.close_name == "too_slow"
    assert sock.closed is None  # the close frame could not be sent either: the app drops the socket


async def test_close_flushes_control_then_sends_the_close_code():
    """close() sends what is queued (not frames), then closes with the code from the contract."""
    sock = FakeSocket()
    s = await started(sock)
    sock.block()
    s.put(control(1))
    await settle()
    s.put(control(2))
    s.put(frame(3))
    s.close("shutting_down")
    s.put(control(99))  # ignored after close
    sock.unblock()
    await s.wait(timeout=2)
    assert [m.get("v") for m in sock.sent] == [1, 2]
    assert sock.closed == (4012, "server restarting")


async def test_one_stalled_connection_does_not_hold_back_another():
    """Frames keep flowing to a healthy connection while another one's socket is stuck."""
    stuck, healthy = FakeSocket(), FakeSocket()
    a = await started(stuck, credits=100)
    b = await started(healthy, credits=100)
    stuck.block()
    for seq in range(1, 51):
        a.put(frame(seq))
        b.put(frame(seq))
        await settle()
    assert len(healthy.sent) == 50
    assert len(stuck.sent) == 0
    a.close("too_slow", flush=False)
    stuck.unblock()
    await asyncio.gather(a.wait(1), b.wait(0.01))


async def test_hub_routes_a_rooms_messages_to_their_recipients():
    """The hub gives each message to exactly the recipients the room names, bytes packed once."""
    h = Harness()
    ada, bob = h.join("editor", "Ada").member_id, h.join("editor", "Bob").member_id
    eve = h.join("viewer", "Eve").member_id
    hub = Hub()
    socks = {m: FakeSocket() for m in (ada, bob, eve)}
    senders = {m: Sender(sock, name=m) for m, sock in socks.items()}
    for m, s in senders.items():
        hub.add(h.room_id, m, s)
        s.start()
    out = h.send(ada, {"t": "add_pair", "pair": "p1", "handle": [1.0, 1.0], "target": [5.0, 5.0]})
    out += h.send(eve, {"t": "clear_points"})  # forbidden: an error to Eve alone
    hub.dispatch(h.room, out)
    await settle()
    assert [m["t"] for m in socks[ada].sent] == ["op", "undo_state"]  # her own stacks: to her alone
    assert [m["t"] for m in socks[bob].sent] == ["op"]
    assert [m["t"] for m in socks[eve].sent] == ["op", "error"]
    assert socks[eve].sent[1]["code"] == "forbidden"
    assert len(hub) == 3
    hub.remove(h.room_id, bob, senders[bob])
    assert len(hub) == 2 and hub.get(h.room_id, bob) is None
    for s in senders.values():
        s.close("shutting_down")
    await asyncio.gather(*(s.wait(1) for s in senders.values()))


def test_close_names_come_from_the_contract():
    """A close reason that is not in the contract is a bug caught at once."""
    with pytest.raises(KeyError):
        Sender(FakeSocket()).close("no_such_reason")
