"""Protocol codec, strict validation, the shared/ contract files and fuzzing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.core import protocol_spec as spec
from server.core.protocol import (
    PROTOCOL_VERSION,
    ProtocolError,
    decode,
    decode_client,
    decode_hello,
    encode,
    from_json_form,
    json_form,
    parse_client,
    validate_server,
)
from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[3]
SHARED = ROOT / "shared"
GOLDEN = SHARED / "golden"
BOUNDS = (256, 256)


def golden(sub: str) -> list[Path]:
    return sorted((GOLDEN / sub).glob("*.json"))


def load_make_golden():
    return load_script("make_golden")


# --- contract files ---------------------------------------------------------------------------


def test_protocol_json_matches_spec():
    """shared/protocol.json is exactly what server/core/protocol_spec.py generates."""
    on_disk = json.loads((SHARED / "protocol.json").read_text())
    assert on_disk == json.loads(json.dumps(spec.spec_json()))
    assert on_disk["protocol_version"] == PROTOCOL_VERSION


def test_contract_files_are_fresh():
    """scripts/make_golden.py --check finds nothing stale (protocol.json and every golden file)."""
    assert load_make_golden().main(["--check"]) == 0


def test_every_message_type_has_a_golden_example():
    """Each client and server message type appears in at least one golden file."""
    c2s = {json.loads(p.read_text())["t"] for p in golden("c2s")}
    s2c = {json.loads(p.read_text())["t"] for p in golden("s2c")}
    assert c2s == set(spec.CLIENT_MESSAGES)
    assert s2c == set(spec.SERVER_MESSAGES)


@pytest.mark.parametrize("path", golden("c2s"), ids=lambda p: p.stem)
def test_golden_client_messages_round_trip(path: Path):
    """A golden client message validates; its msgpack bytes decode to it and re-encode identically."""
    msg = from_json_form(json.loads(path.read_text()))
    data = path.with_suffix(".msgpack").read_bytes()
    assert encode(msg) == data
    assert msgpack.unpackb(data, raw=False) == msg
    parsed = decode_hello(data) if msg["t"] == "hello" else decode_client(data, BOUNDS)
    assert from_json_form(json_form(parsed)) == msg


@pytest.mark.parametrize("path", golden("s2c"), ids=lambda p: p.stem)
def test_golden_server_messages_round_trip(path: Path):
    """A golden server message passes validate_server; its bytes decode to it and re-encode identically."""
    msg = from_json_form(json.loads(path.read_text()))
    data = path.with_suffix(".msgpack").read_bytes()
    assert encode(msg) == data
    assert msgpack.unpackb(data, raw=False) == msg
    validate_server(msg, BOUNDS)


@pytest.mark.parametrize("path", golden("invalid"), ids=lambda p: p.stem)
def test_golden_invalid_messages_are_refused(path: Path):
    """Each golden invalid message is refused with its stated error code, both decoded and as bytes."""
    case = json.loads(path.read_text())
    with pytest.raises(ProtocolError) as e:
        parse_client(case["message"], tuple(case["bounds"]))
    assert e.value.code == case["error"]
    with pytest.raises(ProtocolError) as e:
        decode_client(encode(case["message"]), tuple(case["bounds"]))
    assert e.value.code == case["error"]


def test_protocol_md_lists_every_code():
    """protocol.md names every message type, error code and close code of the spec."""
    text = (SHARED / "protocol.md").read_text()
    for name in [*spec.CLIENT_MESSAGES, *spec.SERVER_MESSAGES, *spec.ERRORS, *spec.CLOSE_CODES]:
        assert f"`{name}`" in text or f"| {name} |" in text, name
    for c in spec.CLOSE_CODES.values():
        assert str(c.code) in text


def test_close_codes_are_distinct_and_in_range():
    """Close codes are unique and in the application range 4000-4999."""
    codes = [c.code for c in spec.CLOSE_CODES.values()]
    assert len(set(codes)) == len(codes)
    assert all(4000 <= c <= 4999 for c in codes)


# --- strict decoding --------------------------------------------------------------------------


def test_parsed_values_are_normalised():
    """Integer coordinates become float tuples; names are stripped."""
    m = parse_client({"t": "add_pair", "pair": "a", "handle": [1, 2], "target": [3.5, 4]}, BOUNDS)
    assert m == {"t": "add_pair", "pair": "a", "handle": (1.0, 2.0), "target": (3.5, 4.0)}
    assert all(type(c) is float for c in m["handle"])
    assert parse_client({"t": "set_name", "name": "  Ada  "})["name"] == "Ada"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never-used byte
        b"\x93\x01\x02\x03",  # array, not a map
        b"\x81\x01\x02",  # int key
        encode({"t": "ping"}) + b"\x00",  # trailing bytes
        encode({"x": 1}),  # no t
        encode({"t": 5}),
        b"\x91" * 3000,  # deep nesting
        msgpack.packb({"t": "ping", "b": b"\x00"}, use_bin_type=True),  # bin from clients
        msgpack.packb(msgpack.ExtType(1, b"ab")),
        b"\x81\xa1t\xa3\xff\xfe\xfd",  # invalid utf-8
    ],
)
def test_undecodable_bytes_are_malformed(data: bytes):
    """Bytes that are not one strict msgpack map with a string t give malformed (or invalid_field)."""
    with pytest.raises(ProtocolError) as e:
        decode_client(data, BOUNDS)
    assert e.value.code in ("malformed", "invalid_field")
    assert e.value.close is None


def test_oversized_message_closes():
    """A message over max_message_bytes is too_large with the too_large close code."""
    data = encode({"t": "set_name", "name": "x" * 40000})
    with pytest.raises(ProtocolError) as e:
        decode_client(data)
    assert (e.value.code, e.value.close) == ("too_large", "too_large")


def test_big_containers_are_refused_by_the_decoder():
    """Arrays and maps beyond the msgpack limits are refused before validation."""
    with pytest.raises(ProtocolError, match="malformed"):
        decode(encode({"t": "paint_mask", "points": [[1, 1]] * 600}))
    with pytest.raises(ProtocolError, match="malformed"):
        decode(encode({"t": "x", **{f"k{i}": i for i in range(40)}}))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(bad: float):
    """NaN and infinities are refused in every float field and in points."""
    with pytest.raises(ProtocolError, match="invalid_field"):
        parse_client({"t": "set_params", "params": {"lr": bad}})
    with pytest.raises(ProtocolError, match="invalid_field"):
        parse_client({"t": "cursor", "pos": [bad, 1.0]}, BOUNDS)


def test_bool_is_not_a_number():
    """true/false are refused where numbers are expected, and numbers where bools would be."""
    for v in (True, False):
        with pytest.raises(ProtocolError, match="invalid_field"):
            parse_client({"t": "ack", "seq": v})
        with pytest.raises(ProtocolError, match="invalid_field"):
            parse_client({"t": "cursor", "pos": [v, 1]}, BOUNDS)


def test_error_carries_ref_and_field():
    """A refusal names the message id it refuses and the offending field path."""
    with pytest.raises(ProtocolError) as e:
        parse_client({"t": "set_params", "id": 9, "params": {"lr": "fast"}})
    msg = e.value.to_message()
    assert msg["ref"] == 9 and msg["field"] == "params.lr" and msg["code"] == "invalid_field"
    validate_server(msg)
    with pytest.raises(ProtocolError) as e:
        parse_client(
            {"t": "paint_mask", "id": 3, "mode": "fixed", "radius": 2, "points": [[1, 1], [999, 1]]}, BOUNDS
        )
    assert (e.value.code, e.value.field, e.value.ref) == ("out_of_bounds", "points[1]", 3)


def test_pair_id_pattern_has_no_newline_loophole():
    """Identifier patterns match whole strings (a trailing newline is refused)."""
    with pytest.raises(ProtocolError, match="invalid_field"):
        parse_client({"t": "remove_pair", "pair": "p1\n"})


def test_points_on_the_edge():
    """0 is inside the image, W is outside."""
    parse_client({"t": "cursor", "pos": [0, 0]}, BOUNDS)
    parse_client({"t": "cursor", "pos": [255.99, 255.99]}, BOUNDS)
    with pytest.raises(ProtocolError, match="out_of_bounds"):
        parse_client({"t": "cursor", "pos": [256, 0]}, BOUNDS)


# --- hello ------------------------------------------------------------------------------------


def hello(**kw) -> bytes:
    return encode({"t": "hello", "v": PROTOCOL_VERSION, "cap": "abc", "name": "Ada", **kw})


def test_hello_ok():
    """A valid hello decodes."""
    assert decode_hello(hello(client_id="abcdefgh"))["client_id"] == "abcdefgh"


def test_hello_version_mismatch_wins_over_unknown_fields():
    """A newer client's hello (other v, new fields) gets version_mismatch, not bad_hello."""
    with pytest.raises(ProtocolError) as e:
        decode_hello(hello(v=PROTOCOL_VERSION + 1, shiny=True))
    assert e.value.close == "version_mismatch"


@pytest.mark.parametrize(
    "data",
    [
        encode({"t": "ping"}),
        hello(cap=""),
        hello(name=5),
        hello(v="1"),
        hello(v=True),
        b"nonsense",
        encode({"t": "hello", "cap": "abc", "name": "x"}),
    ],
)
def test_bad_hello_closes(data: bytes):
    """Anything but a valid hello as first message carries the bad_hello close code."""
    with pytest.raises(ProtocolError) as e:
        decode_hello(data)
    assert e.value.close == "bad_hello"


# --- fuzzing ----------------------------------------------------------------------------------

JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FIELD_NAMES = sorted(
    {k for m in spec.CLIENT_MESSAGES.values() for k in m.fields} | {"t", "x", "params", "mode"}
)


@st.composite
def client_like(draw) -> dict:
    """Maps that look like client messages: a known or odd type, known or odd fields, any values."""
    t = draw(st.sampled_from(sorted(spec.CLIENT_MESSAGES)) | st.text(max_size=6) | JSONISH)
    keys = draw(st.lists(st.sampled_from(FIELD_NAMES) | st.text(max_size=6), max_size=6))
    coord = st.floats(-10, 300) | st.integers(-5, 300)
    value = (
        JSONISH
        | st.lists(coord, min_size=2, max_size=2)
        | st.sampled_from(["handle", "target", "fixed", "p1"])
    )
    msg = {k: draw(value) for k in keys}
    msg["t"] = t
    return msg


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(client_like())
def test_fuzz_parse_raises_only_protocol_errors(msg: dict):
    """Random maps either parse into a message that validates again, or raise ProtocolError."""
    try:
        out = parse_client(msg, BOUNDS)
    except ProtocolError as e:
        assert e.code in spec.ERRORS
        return
    assert decode_client(encode(out), BOUNDS) == out


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes_raise_only_protocol_errors(data: bytes):
    """Random bytes never raise anything but ProtocolError, for hello and later messages."""
    for fn in (decode_hello, lambda d: decode_client(d, BOUNDS)):
        try:
            fn(data)
        except ProtocolError as e:
            assert e.code in spec.ERRORS
