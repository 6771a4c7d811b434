"""What nodes say to each other (sans-I/O) and where rooms go, plus the owner's outbox on a real
Redis: numbered envelopes, the latest frame winning, the message bytes untouched."""

from __future__ import annotations

import asyncio

import pytest

from server.cluster import wire
from server.cluster.placement import NodeInfo, choose_node
from server.cluster.redisio import Outbox, connect
from server.core.outgoing import ALL, Kind, Outgoing


def test_an_out_envelope_carries_the_packed_bytes_unchanged():
    """The message's msgpack bytes travel as they are; the envelope gives them back as an Outgoing
    with the same recipients, kind and the fields a sender reads."""
    frame = Outgoing({"t": "frame", "seq": 7, "jpeg": b"\xff\xd8" * 500, "step": 3}, to=ALL, kind=Kind.FRAME)
    env = wire.unpack(wire.out_envelope(4, 12, frame))
    assert (env.kind, env.epoch, env.seq) == ("o", 4, 12)
    out = env.outgoing()
    assert out.data is env.data and out.data == frame.data
    assert (out.to, out.exclude, out.kind, out.msg) == (ALL, None, Kind.FRAME, {"t": "frame", "seq": 7})


def test_control_envelopes_and_garbage():
    """joined / refused / close envelopes round-trip; anything else is a WireError."""
    assert wire.unpack(wire.joined_envelope(1, 2, "n/1", "m3", 5, "editor")).fields == (
        "n/1",
        "m3",
        5,
        "editor",
    )
    assert wire.unpack(wire.refused_envelope(1, 3, "n/1", "room_full", "x")).fields == (
        "n/1",
        "room_full",
        "x",
    )
    assert wire.unpack(wire.close_envelope(1, 4, "m3", 5, "replaced")).fields == ("m3", 5, "replaced")
    for bad in (b"", b"\x00\x00\x00\x05junk", wire.pack(["z", 1, 1])):
        with pytest.raises(wire.WireError):
            wire.unpack(bad)


def test_acks_are_recognised_and_nothing_else():
    from server.core.protocol import encode

    assert wire.is_ack(encode({"t": "ack", "seq": 9})) == 9
    assert wire.is_ack(encode({"t": "cursor", "pos": [1, 2]})) is None
    assert wire.is_ack(b"\xc1") is None and wire.is_ack(encode({"t": "ack", "seq": "9"})) is None


def test_a_room_goes_to_the_freest_node_that_serves_its_model():
    """Only nodes serving the model and with room to spare; most free first; then one that has
    the model loaded; then the asking node; None when nobody serves it."""
    a = NodeInfo("A", models=("m", "x"), loaded=("m",), free=5)
    b = NodeInfo("B", models=("m",), loaded=(), free=9)
    c = NodeInfo("C", models=("m",), loaded=("m",), free=9)
    full = NodeInfo("D", models=("x",), free=0)
    assert choose_node([a, b, c], "m", me="B").id == "C"  # C has it loaded
    assert choose_node([a, b], "m", me="A").id == "B"  # more free
    assert choose_node([a, full], "x", me="D").id == "A"
    assert choose_node([a, b, c], "nope", me="A") is None
    assert NodeInfo.from_json(a.to_json()) == a


async def test_the_outbox_numbers_what_it_sends_and_the_latest_frame_wins(redis_url: str):
    """Frames put faster than Redis takes them replace each other (no gap in the numbers), control
    messages all arrive in order, the last frame always arrives."""
    r = connect(redis_url)
    sub = connect(redis_url).pubsub()
    await sub.subscribe("ch")
    await sub.get_message(timeout=1)
    box = Outbox(r)
    task = asyncio.get_running_loop().create_task(box.run())
    for i in range(200):
        f = Outgoing({"t": "frame", "seq": i}, kind=Kind.FRAME)
        box.put("ch", 1, lambda e, s, f=f: wire.out_envelope(e, s, f), frame=True)
        if i % 50 == 0:
            op = Outgoing({"t": "op", "v": i})
            box.put("ch", 1, lambda e, s, o=op: wire.out_envelope(e, s, o))
    got = []
    while not got or got[-1].outgoing().msg.get("seq") != 199:
        m = await sub.get_message(ignore_subscribe_messages=True, timeout=5)
        assert m is not None
        got.append(wire.unpack(m["data"]))
    assert [e.seq for e in got] == list(range(1, len(got) + 1))
    assert [e.outgoing().msg.get("seq") for e in got if e.outgoing().msg["t"] == "op"] == [None] * 4
    assert box.replaced > 0 and len(got) < 204
    task.cancel()
    await sub.aclose()
    await r.aclose()
