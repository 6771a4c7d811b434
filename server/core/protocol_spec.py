"""The livedrag wire protocol as data: every message, field, limit, error code and close code.

This table is the single source of the contract. ``server/core/protocol.py`` validates against it,
``scripts/make_golden.py`` writes it out as ``shared/protocol.json`` (read by the JS client and
its tests), and a test fails when the two disagree. ``shared/protocol.md`` explains it in prose.
The limits, patterns, enumerations and shared field shapes it is built from are in
``server/core/protocol_types.py``; this module holds the messages, error codes and close codes.
Imports nothing outside the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.core.protocol_types import (
    BLEND_SOURCES,
    CLIENT_ID_PATTERN,
    FINISH_REASONS,
    HISTORY,
    ID_PATTERN,
    IMAGE,
    INTERRUPTED,
    LATENT_PATTERN,
    LIMITS,
    MASK,
    MASK_CELL,
    MASK_MODES,
    MAX_SAFE_INT,
    MAX_UINT32,
    MEMBER,
    MEMBER_ID,
    MSG_ID,
    NAME,
    PAIR,
    PAIR_ID,
    PARAMS,
    PARAMS_PATCH,
    POINT,
    ROLES,
    SECRET_PATTERN,
    SEED,
    STATE,
    STATE_PATCH,
    STATUSES,
    TASK,
    TOKEN_PATTERN,
    TRUNCATION,
    UPLOAD,
    UPLOAD_PATTERN,
    F,
    opt,
)

PROTOCOL_VERSION = 1


@dataclass(frozen=True)
class MessageSpec:
    """One message type: who sends it, its fields, and (client messages) who may and how often."""

    t: str
    direction: str  # "c2s" (client to server) or "s2c"
    fields: dict[str, F]
    doc: str
    role: str = "editor"  # c2s: "any" or "editor"
    rate: str | None = None  # c2s: token bucket "edit", "cursor" or "control"
    versioned: bool = False  # c2s: applied ops are stamped with a room version and broadcast as "op"
    variants: dict[str, tuple[str, ...]] = field(default_factory=dict)  # ev value -> required fields
    when: When | None = None  # c2s: fields required or forbidden by another field's value

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"direction": self.direction, "doc": self.doc}
        if self.direction == "c2s":
            out.update(role=self.role, rate=self.rate, versioned=self.versioned)
        out["fields"] = {k: f.to_json() for k, f in self.fields.items()}
        if self.variants:
            out["variants"] = {k: list(v) for k, v in self.variants.items()}
        if self.when is not None:
            out["when"] = self.when.to_json()
        return out


@dataclass(frozen=True)
class When:
    """Fields a message must have (``required``) or must not have (``forbidden``) for each value of
    one of its fields (e.g. blend's ``source``). Checked with the other field errors, before any
    state: a message that breaks it gets ``invalid_field`` naming the field."""

    on: str  # the field whose value decides
    required: dict[str, tuple[str, ...]] = field(default_factory=dict)  # value -> fields it needs
    forbidden: dict[str, tuple[str, ...]] = field(default_factory=dict)  # value -> fields it refuses

    def to_json(self) -> dict[str, Any]:
        return {
            "field": self.on,
            "required": {k: list(v) for k, v in self.required.items()},
            "forbidden": {k: list(v) for k, v in self.forbidden.items()},
        }


def _c2s(
    t: str,
    doc: str,
    rate: str = "edit",
    role: str = "editor",
    versioned: bool = True,
    when: When | None = None,
    **fields: F,
):
    fields = {"id": MSG_ID, **fields}
    return MessageSpec(t, "c2s", fields, doc, role=role, rate=rate, versioned=versioned, when=when)


def _s2c(t: str, doc: str, variants: dict[str, tuple[str, ...]] | None = None, **fields: F):
    return MessageSpec(t, "s2c", fields, doc, variants=variants or {})


CLIENT_MESSAGES: dict[str, MessageSpec] = {
    m.t: m
    for m in [
        _c2s(
            "hello",
            "First message on a connection. Answered by welcome + snapshot (+ frame), or a close code.",
            rate=None,
            role="any",
            versioned=False,
            v=F("int", min=0, max=65535, doc="PROTOCOL_VERSION the client speaks"),
            cap=F("str", pattern=TOKEN_PATTERN, doc="edit or view capability from the link's #fragment"),
            name=NAME,
            client_id=opt(
                F(
                    "str",
                    pattern=CLIENT_ID_PATTERN,
                    doc="random per page load; keeps the member id on reconnect",
                )
            ),
            secret=opt(
                F(
                    "str",
                    pattern=SECRET_PATTERN,
                    doc="random per browser, kept: an editor keeps member id, name, colour after restarts",
                )
            ),
        ),
        _c2s("add_pair", "Add a handle/target pair.", pair=PAIR_ID, handle=POINT, target=POINT),
        _c2s(
            "move_point",
            "Move a pair's handle or target (any editor may move any pair). During a drag: next tick.",
            pair=PAIR_ID,
            which=F("enum", values=("handle", "target")),
            pos=POINT,
        ),
        _c2s("remove_pair", "Remove one pair.", pair=PAIR_ID),
        _c2s("clear_points", "Remove every pair."),
        _c2s(
            "paint_mask",
            "Paint one stroke (capsules of radius around the segments) into the mask grid.",
            mode=F("enum", values=MASK_MODES),
            radius=F("float", min=0.5, max=256.0, doc="brush radius in image pixels"),
            points=F("list", min_len=1, max_len=256, items=POINT),
        ),
        _c2s("clear_mask", "Erase the whole mask."),
        _c2s("set_params", "Change drag parameters (only the keys given).", params=PARAMS_PATCH),
        _c2s("start", "Start a drag from the current image and points (refused without points)."),
        _c2s("stop", "Ask the running drag or projection to stop; it commits what it reached."),
        _c2s(
            "new_image",
            "New image from a seed; clears points and mask; commits a history entry.",
            seed=SEED,
            truncation=opt(TRUNCATION),
        ),
        _c2s(
            "blend",
            "Local edit: blend the source into the mask's flexible area, then project toward the blend.",
            source=F("enum", values=BLEND_SOURCES, doc="seed: another seed's image; upload: the last upload"),
            seed=opt(F("int", min=0, max=MAX_UINT32, doc="source seed (source seed only)")),
            truncation=opt(TRUNCATION),
            steps=opt(F("int", min=1, max=LIMITS["max_project_steps"], doc="optimisation steps")),
            when=When("source", required={"seed": ("seed",)}, forbidden={"upload": ("seed", "truncation")}),
        ),
        _c2s(
            "reset",
            "The room's original image again, as a new history entry (undo returns); clears points, mask.",
        ),
        _c2s("undo", "Take back your own newest action (yours only; section 7 of protocol.md)."),
        _c2s("redo", "Apply again your own newest undone action."),
        _c2s(
            "set_name",
            "Change the display name (presence, not versioned).",
            versioned=False,
            name=F("name", min_len=1, max_len=32, doc="display name, printable, stripped, not empty"),
        ),
        _c2s(
            "cursor",
            "Live cursor position (presence, throttled, never versioned); null hides it.",
            rate="cursor",
            versioned=False,
            pos=F("point", nullable=True),
        ),
        _c2s(
            "ack",
            "Frame drawn: returns a frame credit (pacing).",
            rate="control",
            role="any",
            versioned=False,
            seq=F("int", min=0, max=MAX_SAFE_INT),
        ),
        _c2s("ping", "Keep-alive; answered by pong.", rate="control", role="any", versioned=False),
    ]
}

OP_NAMES = tuple(t for t, m in CLIENT_MESSAGES.items() if m.versioned) + ("finish", "commit", "upload")


@dataclass(frozen=True)
class ErrorSpec:
    message: str  # default human message
    strike: bool = False  # counts against the connection's strike budget


ERRORS: dict[str, ErrorSpec] = {
    "malformed": ErrorSpec("message is not a valid msgpack map", strike=True),
    "unknown_type": ErrorSpec("unknown message type", strike=True),
    "invalid_field": ErrorSpec("a field is missing, unknown, or has a wrong type or value", strike=True),
    "out_of_bounds": ErrorSpec("a point lies outside the image", strike=True),
    "too_large": ErrorSpec("message too large"),
    "unexpected_hello": ErrorSpec("already joined", strike=True),
    "forbidden": ErrorSpec("view-only link: editing is not allowed"),
    "rate_limited": ErrorSpec("too many messages; slow down", strike=True),
    "unknown_pair": ErrorSpec("no such pair"),
    "duplicate_pair": ErrorSpec("a pair with this id exists"),
    "too_many_pairs": ErrorSpec("too many point pairs"),
    "busy": ErrorSpec("not allowed while a drag or projection runs; stop it first"),
    "already_running": ErrorSpec("a drag is already running"),
    "not_running": ErrorSpec("no drag is running"),
    "no_points": ErrorSpec("add a point pair first"),
    "nothing_to_undo": ErrorSpec("nothing to undo"),
    "nothing_to_redo": ErrorSpec("nothing to redo"),
    "undo_conflict": ErrorSpec("someone else changed it since: your action is skipped"),
    "no_region": ErrorSpec("paint the area to blend with the flexible brush first"),
    "no_upload": ErrorSpec("upload a picture first"),
    "storage_failed": ErrorSpec("the server could not save the room; the edit is kept in memory"),
    "engine_failed": ErrorSpec("the drag failed on the server"),
    "internal": ErrorSpec("internal server error"),
}


SERVER_MESSAGES: dict[str, MessageSpec] = {
    m.t: m
    for m in [
        _s2c(
            "welcome",
            "Answer to hello: who you are in this room.",
            v=F("int", min=0),
            room=F("str", pattern=ID_PATTERN),
            you=MEMBER_ID,
            role=F("enum", values=ROLES),
            name=F("str", max_len=32),
            colour=F("str", pattern=r"^#[0-9a-f]{6}$"),
            limits=F("dict", items=F("float")),
        ),
        _s2c(
            "snapshot",
            "The whole room: state at a version, editors present, spectator count. Replaces client state.",
            version=F("int", min=0),
            state=STATE,
            members=F("list", items=MEMBER),
            spectators=F("int", min=0),
        ),
        _s2c(
            "op",
            "An applied edit: version v, author by, the author's message id ref; patch replaces state keys.",
            v=F("int", min=1),
            op=F("enum", values=OP_NAMES),
            by=F("str", nullable=True, doc="member id; null for server-made ops (finish, commit)"),
            ref=F("int", nullable=True, min=0, max=MAX_UINT32),
            patch=STATE_PATCH,
        ),
        _s2c(
            "presence",
            "Who is here: join/leave/rename of editors, cursors, spectator count. Never versioned.",
            variants={
                "join": ("member",),
                "leave": ("id",),
                "rename": ("id", "name"),
                "cursor": ("id", "pos"),
                "spectators": ("count",),
            },
            ev=F("enum", values=("join", "leave", "rename", "cursor", "spectators")),
            member=opt(MEMBER),
            id=opt(MEMBER_ID),
            name=opt(F("str", max_len=32)),
            pos=F("point", required=False, nullable=True),
            count=opt(F("int", min=0)),
        ),
        _s2c(
            "frame",
            "A rendered frame: JPEG bytes, tracked handle positions, progress. Latest wins; ack it.",
            seq=F("int", min=1, doc="room frame counter"),
            drag=F("int", min=0),
            step=F("int", min=0),
            status=F("enum", values=STATUSES),
            w=F("int", min=1),
            h=F("int", min=1),
            jpeg=F("bin"),
            handles=F("dict", pattern=ID_PATTERN, items=POINT, doc="pair id -> tracked handle"),
            fps=F("float", required=False, nullable=True, min=0.0),
            lost=F(
                "list",
                required=False,
                max_len=LIMITS["max_pairs"],
                items=PAIR_ID,
                doc="drag: pairs whose handle's feature is no longer found near it",
            ),
            psnr=F("float", required=False, nullable=True, doc="projection: PSNR to the target, dB"),
            loss=F("float", required=False, nullable=True, doc="projection: the objective after the step"),
        ),
        _s2c(
            "status",
            "A drag or projection event: started, or finished with a reason.",
            status=F("enum", values=STATUSES),
            reason=F("enum", nullable=True, values=FINISH_REASONS),
            drag=F("int", min=0),
            step=F("int", min=0),
            message=F("str", required=False, max_len=512),
        ),
        _s2c(
            "error",
            "A refusal or failure; ref is the refused message's id.",
            code=F("enum", values=tuple(ERRORS)),
            message=F("str", max_len=512),
            ref=F("int", nullable=True, min=0, max=MAX_UINT32),
            field=F("str", required=False, max_len=128),
        ),
        _s2c(
            "pong",
            "Answer to ping.",
            ref=F("int", nullable=True, min=0, max=MAX_UINT32),
            time=F("float", doc="server wall-clock time, seconds since the epoch"),
        ),
        _s2c(
            "undo_state",
            "Your own undo and redo stacks (to you only): after you join and whenever they change.",
            undo=F("int", min=0, doc="actions you can undo"),
            redo=F("int", min=0, doc="actions you can redo"),
            undo_kind=F("str", nullable=True, max_len=32, doc="what the next undo takes back (an op name)"),
            redo_kind=F("str", nullable=True, max_len=32, doc="what the next redo applies again"),
        ),
    ]
}


@dataclass(frozen=True)
class CloseSpec:
    code: int
    reason: str  # sent as the websocket close reason (short, ASCII)
    reconnect: bool  # whether clients should reconnect automatically (with backoff and jitter)


CLOSE_CODES: dict[str, CloseSpec] = {
    "bad_hello": CloseSpec(4000, "first message must be a valid hello", False),
    "bad_capability": CloseSpec(4001, "invalid or expired link", False),
    "version_mismatch": CloseSpec(4002, "protocol version mismatch; reload the page", False),
    "origin_forbidden": CloseSpec(4003, "origin not allowed", False),
    "room_not_found": CloseSpec(4004, "room not found", False),
    "room_full": CloseSpec(4005, "room is full", True),
    "server_full": CloseSpec(4006, "server is full", True),
    "hello_timeout": CloseSpec(4008, "no hello in time", True),
    "too_large": CloseSpec(4009, "message too large", False),
    "rate_limited": CloseSpec(4010, "rate limit exceeded", True),
    "too_slow": CloseSpec(4011, "connection fell behind; reconnect to resync", True),
    "shutting_down": CloseSpec(4012, "server restarting", True),
    "protocol_violation": CloseSpec(4013, "too many invalid messages", False),
    "room_closed": CloseSpec(4014, "room was closed", False),
    "idle_timeout": CloseSpec(4015, "connection idle", True),
    "internal_error": CloseSpec(4016, "internal server error", True),
    "replaced": CloseSpec(4017, "joined again from another connection", False),
}


def spec_json() -> dict[str, Any]:
    """The whole contract as JSON-ready data (written to shared/protocol.json)."""
    return {
        "$comment": (
            "Generated from server/core/protocol_spec.py by scripts/make_golden.py; do not edit by hand."
        ),
        "protocol_version": PROTOCOL_VERSION,
        "encoding": "msgpack, one map per binary websocket message, key t = message type",
        "limits": dict(LIMITS),
        "patterns": {
            "id": ID_PATTERN,
            "token": TOKEN_PATTERN,
            "client_id": CLIENT_ID_PATTERN,
            "secret": SECRET_PATTERN,
            "latent": LATENT_PATTERN,
            "upload": UPLOAD_PATTERN,
        },
        "mask_cell": dict(MASK_CELL),
        "types": {
            "image": IMAGE.to_json(),
            "pair": PAIR.to_json(),
            "mask": MASK.to_json(),
            "params": PARAMS.to_json(),
            "history": HISTORY.to_json(),
            "task": TASK.to_json(),
            "interrupted": INTERRUPTED.to_json(),
            "upload": UPLOAD.to_json(),
            "state": STATE.to_json(),
            "member": MEMBER.to_json(),
        },
        "client_messages": {t: m.to_json() for t, m in CLIENT_MESSAGES.items()},
        "server_messages": {t: m.to_json() for t, m in SERVER_MESSAGES.items()},
        "errors": {k: {"message": e.message, "strike": e.strike} for k, e in ERRORS.items()},
        "close_codes": {
            k: {"code": c.code, "reason": c.reason, "reconnect": c.reconnect} for k, c in CLOSE_CODES.items()
        },
    }
