"""The protocol's building blocks: limits, patterns, enumerations, the field type ``F`` and the
field shapes the messages share (image, pair, mask, params, task, upload, state, member).

``server/core/protocol_spec.py`` builds the message, error and close-code tables from them.
Imports nothing outside the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Numeric limits. Client-visible ones are also sent in the welcome message ("limits").
LIMITS: dict[str, int | float] = {
    "max_message_bytes": 32768,  # largest client->server websocket message; larger: close too_large
    "max_str_bytes": 512,  # msgpack str limit when decoding client messages
    "max_array_len": 512,  # msgpack array limit when decoding client messages
    "max_map_len": 32,  # msgpack map limit when decoding client messages
    "max_pairs": 64,  # point pairs per room
    "max_stroke_points": 256,  # points in one paint_mask stroke
    "max_name_chars": 32,  # display name length (printable characters)
    "mask_max_cells": 64,  # the mask grid is min(W, 64) x min(H, 64) cells
    "cursor_hz": 20,  # at most this many cursor broadcasts per member per second
    "frame_credits": 2,  # frames in flight per client before the server waits for an ack
    "hello_timeout_s": 10,  # the hello must arrive within this many seconds of connecting
    "ping_interval_s": 15,  # clients ping this often; the server drops connections silent for 60 s
    "idle_timeout_s": 60,
    "history_max": 50,  # committed image states kept per room (oldest dropped)
    "max_project_steps": 1000,  # optimisation steps of one projection or blend
    "edit_rate_per_s": 30,  # token bucket for edit messages (every versioned op and set_name)
    "edit_burst": 60,
    "cursor_rate_per_s": 30,  # token bucket for cursor messages (over budget: dropped silently)
    "cursor_burst": 30,
    "control_rate_per_s": 60,  # token bucket for ack and ping
    "control_burst": 120,
    "strike_burst": 20,  # refusals (rate limited, malformed, invalid) tolerated in a burst ...
    "strike_rate_per_s": 1,  # ... refilled at this rate; when exhausted the connection is closed
}

ID_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"  # pair ids (chosen by clients) and member ids
TOKEN_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"  # capabilities (secrets.token_urlsafe output)
CLIENT_ID_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"
SECRET_PATTERN = r"^[A-Za-z0-9_-]{22,64}$"  # a browser's identity secret (>= 128 bits of randomness)
LATENT_PATTERN = r"^[0-9a-f]{64}$"  # sha256 hex of the latent bytes
MAX_UINT32 = 2**32 - 1
MAX_SAFE_INT = 2**53 - 1  # largest integer JavaScript represents exactly

ROLES = ("editor", "viewer")
MODES = ("optimize", "predict")
STATUSES = ("idle", "running", "stopping", "projecting")
FINISH_REASONS = ("reached", "converged", "max_steps", "stalled", "lost", "stopped", "error")
MASK_MODES = ("flexible", "fixed", "erase")
MASK_CELL = {"none": 0, "flexible": 1, "fixed": 2}  # byte values in mask.cells
HISTORY_KINDS = ("new_image", "drag", "upload", "blend", "reset")
LATENT_SPACES = ("w+", "w")  # optimize mode: W+ (first rows each free) or W (one shared row offset)
RUN_KINDS = ("drag", "upload", "blend")  # what a run is: a drag, or a projection (TASK_KINDS)
TASK_KINDS = ("upload", "blend")  # what a projection works toward: an uploaded picture, or a blend
PROJECT_METHODS = ("encoder", "optimize")  # encoder: one forward pass; optimize: encoder + Adam steps
BLEND_SOURCES = ("seed", "upload")
UPLOAD_PATTERN = r"^[0-9a-f]{64}$"  # sha256 hex of the stored target PNG


@dataclass(frozen=True)
class F:
    """One field (or nested value): its kind and limits.

    kinds: int, float (ints accepted, finite only), bool, str, bin, enum (values), point ([x, y]
    finite numbers inside the image), list (items), map (fields: fixed keys), dict (free keys
    matching pattern, values: items), name (display name: printable, stripped).
    """

    kind: str
    required: bool = True
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    min_len: int | None = None  # str characters, list items, bin bytes, map keys
    max_len: int | None = None
    pattern: str | None = None  # str values, dict keys
    values: tuple[str, ...] | None = None  # enum
    items: F | None = None  # list items, dict values
    fields: dict[str, F] | None = None  # map
    doc: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind, "required": self.required}
        if self.nullable:
            out["nullable"] = True
        for key in ("min", "max", "min_len", "max_len", "pattern"):
            v = getattr(self, key)
            if v is not None:
                out[key] = v
        if self.values is not None:
            out["values"] = list(self.values)
        if self.items is not None:
            out["items"] = self.items.to_json()
        if self.fields is not None:
            out["fields"] = {k: f.to_json() for k, f in self.fields.items()}
        if self.doc:
            out["doc"] = self.doc
        return out


def opt(f: F) -> F:
    """The same field, optional."""
    return F(**{**f.__dict__, "required": False})


# Reusable field shapes
MSG_ID = F("int", required=False, min=0, max=MAX_UINT32, doc="client message id, echoed as ref")
PAIR_ID = F("str", pattern=ID_PATTERN, doc="pair id chosen by the client that adds it")
MEMBER_ID = F("str", pattern=ID_PATTERN)
POINT = F("point", doc="[x, y] image pixels; integer values are pixel centres; 0 <= x < W, 0 <= y < H")
SEED = F("int", min=0, max=MAX_UINT32)
TRUNCATION = F("float", min=0.0, max=2.0)
NAME = F("name", min_len=0, max_len=32, doc="display name, printable, stripped; empty: server picks one")

PARAM_FIELDS: dict[str, F] = {
    "mode": F("enum", values=MODES, doc="optimize: DragGAN optimiser; predict: latent predictor"),
    "lr": F("float", min=1e-6, max=1.0, doc="optimiser learning rate"),
    "lambda": F("float", min=0.0, max=1000.0, doc="weight of the fixed-region (mask) loss"),
    "max_steps": F("int", min=1, max=10000, doc="step cap of one drag"),
    "r1": F("float", nullable=True, min=0.5, max=64.0, doc="motion supervision radius; null: auto"),
    "r2": F("float", nullable=True, min=1.0, max=128.0, doc="tracking search half-size; null: auto"),
    "stop_dist": F(
        "float", nullable=True, min=0.1, max=64.0, doc="done when every handle is this close; null: auto"
    ),
    "space": F(
        "enum",
        values=LATENT_SPACES,
        doc="optimize: w+ moves the first W+ rows independently, w one row shared by them; next drag",
    ),
}
PARAMS = F("map", fields=PARAM_FIELDS)
PARAMS_PATCH = F("map", min_len=1, fields={k: opt(f) for k, f in PARAM_FIELDS.items()})

IMAGE = F(
    "map",
    fields={
        "model": F("str", min_len=1, max_len=64, doc="generator name"),
        "w": F("int", min=1, max=4096),
        "h": F("int", min=1, max=4096),
        "seed": F("int", nullable=True, min=0, max=MAX_UINT32, doc="seed the image came from"),
        "truncation": TRUNCATION,
        "latent": F("str", nullable=True, pattern=LATENT_PATTERN, doc="committed latent; null: the seed's"),
    },
)
PAIR = F("map", fields={"id": PAIR_ID, "handle": POINT, "target": POINT, "owner": F("str", nullable=True)})
MASK = F(
    "map",
    doc="grid of w x h cells over the image, row-major, one byte per cell: 0 none, 1 flexible, 2 fixed",
    fields={
        "w": F("int", min=1, max=64),
        "h": F("int", min=1, max=64),
        "cells": F("bin", max_len=64 * 64),
    },
)
HISTORY = F("map", fields={"index": F("int", min=0), "size": F("int", min=1)})
TASK = F(
    "map",
    nullable=True,
    required=False,
    doc="the projection running now (status projecting or stopping); null: none",
    fields={
        "kind": F("enum", values=TASK_KINDS, doc="upload: toward an uploaded picture; blend: a local edit"),
        "method": F("enum", values=PROJECT_METHODS, doc="encoder: one forward pass; optimize: + steps"),
        "max_steps": F("int", min=0, max=LIMITS["max_project_steps"], doc="optimisation step cap"),
        "by": F("str", nullable=True, doc="member id that started it; null: an HTTP upload"),
    },
)
UPLOAD = F(
    "map",
    nullable=True,
    required=False,
    doc="the room's last uploaded picture (GET /api/rooms/{room}/upload.png); null: none",
    fields={
        "key": F("str", pattern=UPLOAD_PATTERN, doc="sha256 of the stored target PNG"),
        "w": F("int", min=1, max=4096),
        "h": F("int", min=1, max=4096),
    },
)
INTERRUPTED = F(
    "map",
    nullable=True,
    required=False,
    doc="the last run was cut short by a server crash (reported after the restart); null: it was not",
    fields={
        "kind": F("enum", values=RUN_KINDS, doc="drag, or the projection's kind"),
        "drag": F("int", min=0, doc="its run number"),
        "step": F(
            "int", min=0, doc="the step whose image was kept (committed); 0: none, the image is as before"
        ),
        "by": F("str", nullable=True, doc="member id that started it; null: server-made"),
    },
)
STATE_FIELDS: dict[str, F] = {
    "image": IMAGE,
    "pairs": F("list", max_len=64, items=PAIR),
    "mask": MASK,
    "params": PARAMS,
    "status": F("enum", values=STATUSES),
    "step": F("int", min=0, doc="steps taken by the current (or last) drag"),
    "drag": F("int", min=0, doc="drag counter: increases at every start"),
    "history": HISTORY,
    "task": TASK,
    "upload": UPLOAD,
    "interrupted": INTERRUPTED,
}
STATE = F("map", fields=STATE_FIELDS)
STATE_PATCH = F("map", min_len=1, fields={k: opt(f) for k, f in STATE_FIELDS.items()})
MEMBER = F(
    "map",
    fields={
        "id": MEMBER_ID,
        "name": F("str", max_len=32),
        "colour": F("str", pattern=r"^#[0-9a-f]{6}$"),
        "role": F("enum", values=ROLES),
    },
)
