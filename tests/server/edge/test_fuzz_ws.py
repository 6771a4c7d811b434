"""Property-based fuzzing over the websocket: random msgpack never crashes the server, and every
message the protocol refuses is answered with the error code the codec predicts."""

from __future__ import annotations

import msgpack
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from server.core.limits import RoomLimits
from server.core.protocol import ProtocolError, decode_client, encode
from server.core.protocol_spec import CLIENT_MESSAGES
from server.core.ratelimit import RateBudgets
from server.edge.app import create_app
from tests.server.live import RES, TestClient, close_code, hello, make_settings, recv_msg, recv_until

# No rate limits and no strike budget here: every message must be judged on its content alone.
UNLIMITED = RateBudgets(*(1e9,) * 8)
EXAMPLES = 40
FUZZ = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
FIELDS = sorted({name for m in CLIENT_MESSAGES.values() for name in m.fields} | {"x"})
points = st.lists(st.floats(-10, RES + 10) | st.integers(-5, RES + 5), min_size=0, max_size=3)
typed = st.builds(
    lambda t, fields: {"t": t, **fields},
    st.sampled_from(sorted(CLIENT_MESSAGES) + ["nope", ""]),
    st.dictionaries(st.sampled_from(FIELDS), values | points, max_size=4),
)


def pack(v) -> bytes:
    return msgpack.packb(v, use_bin_type=True)


messages = st.one_of(
    st.binary(max_size=64),
    values.map(pack),
    typed.map(pack),
    st.dictionaries(st.integers(0, 5) | st.text(max_size=3), values, max_size=3).map(pack),
)


def expected_error(data: bytes) -> str | None:
    """The error code the server must answer with (None: a valid message, answered or not)."""
    try:
        msg = decode_client(data, (RES, RES))
    except ProtocolError as e:
        return e.code
    return "unexpected_hello" if msg["t"] == "hello" else None


def test_random_messages_get_the_predicted_errors_and_never_crash(tmp_path):
    """Each random message is answered (before the next pong) with the codec's error, never internal."""
    app = create_app(make_settings(tmp_path), room_limits=RoomLimits(rates=UNLIMITED))
    with TestClient(app) as client:
        room = client.post("/api/rooms", json={"seed": 1}).json()
        with client.websocket_connect(f"/ws/{room['room']}") as ws:
            ws.send_bytes(hello(room["edit_token"]))
            assert recv_msg(ws)["t"] == "welcome"
            pings = iter(range(10**6, 2 * 10**6))
            seen: dict[str, int] = {}

            @settings(FUZZ, max_examples=EXAMPLES * 3)
            @given(messages)
            @example(pack({"t": "nope"}))
            @example(pack({"t": "hello", "v": 1, "cap": "abc", "name": "x"}))
            @example(pack({"t": "move_point", "pair": "p", "which": "handle", "pos": [RES + 1.0, 0.0]}))
            def check(data: bytes) -> None:
                ping = next(pings)
                ws.send_bytes(data)
                ws.send_bytes(encode({"t": "ping", "id": ping}))
                got = recv_until(ws, lambda m: m["t"] == "pong" and m["ref"] == ping)
                codes = [m["code"] for m in got if m["t"] == "error"]
                assert "internal" not in codes
                want = expected_error(data)
                if want is not None:
                    assert want in codes, (data, want, codes)
                    seen[want] = seen.get(want, 0) + 1

            check()
            ws.send_bytes(encode({"t": "ping", "id": 7}))
            assert recv_until(ws, lambda m: m["t"] == "pong")[-1]["ref"] == 7
        assert client.get("/healthz").json()["ok"]
    assert {"malformed", "invalid_field", "unknown_type", "unexpected_hello", "out_of_bounds"} <= set(seen)


def test_random_first_messages_close_with_a_handshake_code(tmp_path):
    """Whatever arrives instead of a valid hello closes the connection with 4000, 4001 or 4002."""
    app = create_app(make_settings(tmp_path))
    with TestClient(app) as client:
        room = client.post("/api/rooms", json={"seed": 1}).json()

        @settings(
            max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(messages | typed.map(lambda m: {**m, "t": "hello"}).map(pack))
        def check(data: bytes) -> None:
            with client.websocket_connect(f"/ws/{room['room']}") as ws:
                ws.send_bytes(data)
                assert close_code(ws) in (4000, 4001, 4002)

        check()
        assert client.get("/healthz").json()["ok"]
