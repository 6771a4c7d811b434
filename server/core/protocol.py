"""Sans-I/O codec and strict validation for the livedrag websocket protocol.

Every websocket message is one msgpack map with ``t`` (its type) and fields; see
``shared/protocol.md``. The message table lives in ``server/core/protocol_spec.py``. This module turns
bytes into validated, normalised dicts (ints stay ints, floats become ``float``, points become
``(x, y)`` tuples) or raises :class:`ProtocolError` carrying an error code from the spec and,
for fatal problems, the close code the connection must be closed with. It never raises anything
else for any input. No Starlette, no torch.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from typing import Any

import msgpack

from server.core.protocol_spec import (
    CLIENT_MESSAGES,
    CLOSE_CODES,
    ERRORS,
    PROTOCOL_VERSION,
    SERVER_MESSAGES,
    CloseSpec,
    MessageSpec,
)
from server.core.protocol_types import LIMITS, F

__all__ = [
    "PROTOCOL_VERSION",
    "ProtocolError",
    "close_spec",
    "decode",
    "decode_client",
    "decode_hello",
    "encode",
    "error_message",
    "from_json_form",
    "json_form",
    "message_ref",
    "parse_client",
    "validate_server",
]

Bounds = tuple[int, int]  # image (width, height) that points must lie in


class ProtocolError(Exception):
    """A message was refused. ``code`` is a key of ERRORS; ``close`` a key of CLOSE_CODES or None.

    When ``close`` is set the connection must be closed with that close code (after sending
    ``to_message()`` where that makes sense); otherwise reply with ``to_message()`` and go on.
    """

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        ref: int | None = None,
        field: str | None = None,
        close: str | None = None,
    ) -> None:
        assert code in ERRORS, code
        assert close is None or close in CLOSE_CODES, close
        self.code = code
        self.message = message or ERRORS[code].message
        self.ref = ref
        self.field = field
        self.close = close
        super().__init__(f"{code}: {self.message}")

    @property
    def strike(self) -> bool:
        """Whether this refusal counts against the connection's strike budget."""
        return ERRORS[self.code].strike

    def to_message(self) -> dict[str, Any]:
        return error_message(self.code, self.message, ref=self.ref, field=self.field)


def error_message(code: str, message: str | None = None, *, ref: int | None = None, field: str | None = None):
    """An ``error`` message dict."""
    msg: dict[str, Any] = {
        "t": "error",
        "code": code,
        "message": (message or ERRORS[code].message)[:512],
        "ref": ref,
    }
    if field is not None:
        msg["field"] = field[:128]
    return msg


def close_spec(name: str) -> CloseSpec:
    """Close code and reason for a CLOSE_CODES key, e.g. ``close_spec("room_full").code == 4005``."""
    return CLOSE_CODES[name]


# ---------------------------------------------------------------------------------------------
# msgpack


def encode(msg: Mapping[str, Any]) -> bytes:
    """One message -> msgpack bytes (bytes become bin, str become str, tuples become arrays)."""
    return msgpack.packb(msg, use_bin_type=True)


def decode(data: bytes, *, max_bytes: int | None = None, max_bin: int = 0) -> dict[str, Any]:
    """Bytes -> a map with a str ``t``, strictly (size limits, no ext types, str keys, no trailing
    bytes). Structure only: use decode_client / decode_hello for full validation."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError("malformed", "expected a binary message")
    limit = LIMITS["max_message_bytes"] if max_bytes is None else max_bytes
    if len(data) > limit:
        raise ProtocolError("too_large", f"message of {len(data)} bytes exceeds {limit}", close="too_large")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=int(LIMITS["max_str_bytes"]),
            max_bin_len=max_bin,
            max_array_len=int(LIMITS["max_array_len"]),
            max_map_len=int(LIMITS["max_map_len"]),
            max_ext_len=0,
        )
    except Exception as e:  # msgpack raises ValueError subclasses, UnicodeDecodeError, StackError...
        raise ProtocolError("malformed", f"cannot decode msgpack: {type(e).__name__}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("malformed", f"expected a map, got {_tname(obj)}")
    t = obj.get("t")
    if not isinstance(t, str):
        raise ProtocolError("malformed", "missing message type t", ref=message_ref(obj), field="t")
    return obj


def decode_client(data: bytes, bounds: Bounds | None = None) -> dict[str, Any]:
    """Bytes from a joined client -> validated message (points checked against bounds if given)."""
    return parse_client(decode(data), bounds)


def decode_hello(data: bytes) -> dict[str, Any]:
    """The first message of a connection. Every failure carries a close code: version_mismatch
    when ``v`` differs from PROTOCOL_VERSION (checked before the other fields, so newer clients
    with new hello fields get the right answer), bad_hello otherwise."""
    try:
        obj = decode(data)
    except ProtocolError as e:
        e.close = e.close or "bad_hello"
        raise
    if obj.get("t") != "hello":
        raise ProtocolError(
            "unknown_type", "first message must be hello", ref=message_ref(obj), close="bad_hello"
        )
    v = obj.get("v")
    if type(v) is int and v != PROTOCOL_VERSION:
        raise ProtocolError(
            "invalid_field",
            f"protocol version {v} not supported; this server speaks {PROTOCOL_VERSION}",
            field="v",
            close="version_mismatch",
        )
    try:
        return parse_client(obj)
    except ProtocolError as e:
        e.close = "bad_hello"
        raise


def parse_client(obj: Any, bounds: Bounds | None = None) -> dict[str, Any]:
    """Validate a decoded client message against CLIENT_MESSAGES; return a normalised copy."""
    if not isinstance(obj, dict):
        raise ProtocolError("malformed", f"expected a map, got {_tname(obj)}")
    t = obj.get("t")
    spec = CLIENT_MESSAGES.get(t) if isinstance(t, str) else None
    if spec is None:
        raise ProtocolError(
            "unknown_type", f"unknown message type {_short(t)}", ref=message_ref(obj), field="t"
        )
    return _check_message(obj, spec, bounds, ref=message_ref(obj))


def validate_server(msg: Mapping[str, Any], bounds: Bounds | None = None) -> dict[str, Any]:
    """Check a server->client message against SERVER_MESSAGES (tests and golden files use it)."""
    t = msg.get("t")
    spec = SERVER_MESSAGES.get(t) if isinstance(t, str) else None
    if spec is None:
        raise ProtocolError("unknown_type", f"unknown server message type {_short(t)}", field="t")
    return _check_message(dict(msg), spec, bounds, ref=None)


def json_form(v: Any) -> Any:
    """A message as JSON-ready data: bytes become {"$bin": "<base64>"} (the golden files' form)."""
    if isinstance(v, (bytes, bytearray)):
        return {"$bin": base64.b64encode(v).decode("ascii")}
    if isinstance(v, dict):
        return {k: json_form(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_form(x) for x in v]
    return v


def from_json_form(v: Any) -> Any:
    """Inverse of json_form: {"$bin": "<base64>"} becomes bytes."""
    if isinstance(v, dict):
        if set(v) == {"$bin"}:
            return base64.b64decode(v["$bin"], validate=True)
        return {k: from_json_form(x) for k, x in v.items()}
    if isinstance(v, list):
        return [from_json_form(x) for x in v]
    return v


# ---------------------------------------------------------------------------------------------
# validation


def _check_message(obj: dict[str, Any], spec: MessageSpec, bounds: Bounds | None, ref: int | None):
    out: dict[str, Any] = {"t": spec.t}
    try:
        out.update(_check_fields({k: v for k, v in obj.items() if k != "t"}, spec.fields, "", bounds))
        if spec.variants:
            ev = out["ev"]
            for name in spec.variants[ev]:
                if name not in out:
                    raise _invalid(name, f"required for ev={ev}")
        if spec.when is not None:
            w = spec.when
            value = out.get(w.on)
            for name in w.required.get(value, ()):
                if name not in out:
                    raise _invalid(name, f"required with {w.on} {value}")
            for name in w.forbidden.get(value, ()):
                if name in out:
                    raise _invalid(name, f"not allowed with {w.on} {value}")
    except ProtocolError as e:
        e.ref = ref
        raise
    return out


def _check_fields(obj: dict[str, Any], fields: dict[str, F], path: str, bounds: Bounds | None):
    out: dict[str, Any] = {}
    for key in obj:
        if key not in fields:
            raise _invalid(f"{path}{key}", "unknown field")
    for key, f in fields.items():
        if key in obj:
            out[key] = _check(obj[key], f, f"{path}{key}", bounds)
        elif f.required:
            raise _invalid(f"{path}{key}", "missing")
    return out


def _check(v: Any, f: F, path: str, bounds: Bounds | None) -> Any:
    if v is None:
        if f.nullable:
            return None
        raise _invalid(path, "must not be null")
    kind = f.kind
    if kind == "int":
        if type(v) is not int:  # bool is an int subclass: refuse it
            raise _invalid(path, f"expected int, got {_tname(v)}")
        _range(v, f, path)
        return v
    if kind == "float":
        if type(v) not in (int, float):
            raise _invalid(path, f"expected number, got {_tname(v)}")
        v = float(v)
        if not math.isfinite(v):
            raise _invalid(path, "must be finite")
        _range(v, f, path)
        return v
    if kind == "bool":
        if type(v) is not bool:
            raise _invalid(path, f"expected bool, got {_tname(v)}")
        return v
    if kind in ("str", "name"):
        if type(v) is not str:
            raise _invalid(path, f"expected str, got {_tname(v)}")
        if kind == "name":
            v = v.strip()
            if not v.isprintable():
                raise _invalid(path, "must be printable")
        _length(len(v), f, path)
        if f.pattern is not None and not _regex(f.pattern).fullmatch(v):
            raise _invalid(path, "has characters or a length that are not allowed")
        return v
    if kind == "enum":
        if type(v) is not str or v not in f.values:
            raise _invalid(path, f"expected one of {', '.join(f.values)}")
        return v
    if kind == "bin":
        if type(v) is not bytes:
            raise _invalid(path, f"expected bin, got {_tname(v)}")
        _length(len(v), f, path)
        return v
    if kind == "point":
        return _point(v, path, bounds)
    if kind == "list":
        if type(v) is not list:
            raise _invalid(path, f"expected array, got {_tname(v)}")
        _length(len(v), f, path)
        return [_check(item, f.items, f"{path}[{i}]", bounds) for i, item in enumerate(v)]
    if kind == "map":
        if type(v) is not dict:
            raise _invalid(path, f"expected map, got {_tname(v)}")
        _length(len(v), f, path)
        return _check_fields(v, f.fields, f"{path}.", bounds)
    if kind == "dict":
        if type(v) is not dict:
            raise _invalid(path, f"expected map, got {_tname(v)}")
        _length(len(v), f, path)
        out = {}
        for key, item in v.items():
            if type(key) is not str or (f.pattern is not None and not _regex(f.pattern).fullmatch(key)):
                raise _invalid(path, f"bad key {_short(key)}")
            out[key] = _check(item, f.items, f"{path}.{key}", bounds)
        return out
    raise AssertionError(f"unknown field kind {kind}")  # a bug in the spec, not in the message


def _point(v: Any, path: str, bounds: Bounds | None) -> tuple[float, float]:
    if type(v) is not list or len(v) != 2:
        raise _invalid(path, "expected [x, y]")
    x, y = v
    if type(x) not in (int, float) or type(y) not in (int, float):
        raise _invalid(path, "coordinates must be numbers")
    x, y = float(x), float(y)
    if not (math.isfinite(x) and math.isfinite(y)):
        raise _invalid(path, "coordinates must be finite")
    if bounds is not None:
        w, h = bounds
        if not (0.0 <= x < w and 0.0 <= y < h):
            raise ProtocolError(
                "out_of_bounds", f"{path}: ({x:g}, {y:g}) is outside the {w}x{h} image", field=path
            )
    return (x, y)


def _range(v: float, f: F, path: str) -> None:
    if (f.min is not None and v < f.min) or (f.max is not None and v > f.max):
        raise _invalid(path, f"must be in [{_g(f.min)}, {_g(f.max)}]")


def _length(n: int, f: F, path: str) -> None:
    if (f.min_len is not None and n < f.min_len) or (f.max_len is not None and n > f.max_len):
        raise _invalid(path, f"length must be in [{f.min_len or 0}, {_g(f.max_len)}]")


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def _regex(pattern: str) -> re.Pattern[str]:
    rx = _REGEX_CACHE.get(pattern)
    if rx is None:
        rx = _REGEX_CACHE[pattern] = re.compile(pattern)
    return rx


def _invalid(path: str, what: str) -> ProtocolError:
    return ProtocolError("invalid_field", f"{path}: {what}", field=path)


def message_ref(obj: Any) -> int | None:
    """The message id of a (possibly invalid) message, if it has a usable one."""
    ref = obj.get("id") if isinstance(obj, dict) else None
    return ref if type(ref) is int and 0 <= ref <= 2**32 - 1 else None


def _tname(v: Any) -> str:
    return {dict: "map", list: "array", bytes: "bin", type(None): "null"}.get(type(v), type(v).__name__)


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _g(v: float | None) -> str:
    return "inf" if v is None else f"{v:g}"
