"""Write the protocol contract files in shared/: protocol.json and the golden example messages.

    python scripts/make_golden.py          # (re)write shared/protocol.json and shared/golden/
    python scripts/make_golden.py --check  # exit 1 if the files on disk differ from what it would write

protocol.json is generated from server/core/protocol_spec.py. Golden messages: shared/golden/c2s/ and
shared/golden/s2c/ hold <name>.json (binary fields as {"$bin": "<base64>"}) and <name>.msgpack
(the exact bytes the Python encoder writes); shared/golden/invalid/ holds refused client messages
with the error code they must get. Client examples assume a 256 x 256 image.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.core.protocol import encode, json_form  # noqa: E402
from server.core.protocol_spec import PROTOCOL_VERSION, spec_json  # noqa: E402
from server.core.protocol_types import LIMITS  # noqa: E402

SHARED = ROOT / "shared"
GOLDEN_BOUNDS = (256, 256)  # image size the client examples assume


TINY_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAYEBQYFBAYGBQYHBwYIChAKCgkJChQODwwQFxQYGBcUFhYaHSUfGhsjHBYWICwg"
    "IyYnKSopGR8tMC0oMCUoKSj/2wBDAQcHBwoIChMKChMoGhYaKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgo"
    "KCgoKCgoKCgoKCgoKCj/wAARCAAIAAgDASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAA"
    "AgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6"
    "Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXG"
    "x8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREA"
    "AgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5"
    "OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPE"
    "xcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwDM8J/Dv7n7n9KKKK8vG5tifav3jo4ZzzGf"
    "UY+8f//Z"
)  # 8x8 JPEG (a real one, so JS tests may decode it); a constant, so no encoder version matters


def mask_cells(w: int = 64, h: int = 64) -> bytes:
    cells = bytearray(w * h)
    for y in range(20, 28):
        for x in range(30, 40):
            cells[y * w + x] = 1  # a small flexible patch
    return bytes(cells)


PARAMS = {
    "mode": "optimize",
    "lr": 0.002,
    "lambda": 12.5,
    "max_steps": 300,
    "r1": None,
    "r2": None,
    "stop_dist": None,
    "space": "w+",
}
IMAGE = {"model": "synthfaces", "w": 256, "h": 256, "seed": 42, "truncation": 0.7, "latent": None}
PAIRS = [
    {"id": "p1", "handle": [100.5, 120.5], "target": [140.5, 110.5], "owner": "m1"},
    {"id": "p2", "handle": [60.5, 200.5], "target": [70.5, 180.5], "owner": "m2"},
]
MEMBERS = [
    {"id": "m1", "name": "Ada", "colour": "#e6194b", "role": "editor"},
    {"id": "m2", "name": "Grace", "colour": "#3cb44b", "role": "editor"},
]
LATENT = "3f7a" * 16


UPLOAD_KEY = "5f0c" * 16  # sha256 hex of a stored target PNG (an example)


def client_examples() -> dict[str, dict[str, Any]]:
    return {
        "hello": {
            "t": "hello",
            "v": PROTOCOL_VERSION,
            "cap": "Zk3v9Qm2LxTQ0n8Yb1cR5wHs7JdUe4Ap",
            "name": "Ada",
            "client_id": "c7Hq2LmX9vTz",
        },
        "add_pair": {
            "t": "add_pair",
            "id": 1,
            "pair": "p1",
            "handle": [100.5, 120.5],
            "target": [140.5, 110.5],
        },
        "move_point": {"t": "move_point", "id": 2, "pair": "p1", "which": "target", "pos": [150.5, 105.25]},
        "remove_pair": {"t": "remove_pair", "id": 3, "pair": "p2"},
        "clear_points": {"t": "clear_points", "id": 4},
        "paint_mask": {
            "t": "paint_mask",
            "id": 5,
            "mode": "flexible",
            "radius": 12.5,
            "points": [[120.5, 90.5], [130.5, 95.5], [140.5, 99.5]],
        },
        "clear_mask": {"t": "clear_mask", "id": 6},
        "set_params": {"t": "set_params", "id": 7, "params": {"lr": 0.001, "max_steps": 200, "r1": None}},
        "start": {"t": "start", "id": 8},
        "stop": {"t": "stop", "id": 9},
        "new_image": {"t": "new_image", "id": 10, "seed": 1234, "truncation": 0.5},
        "undo": {"t": "undo", "id": 11},
        "redo": {"t": "redo", "id": 12},
        "set_name": {"t": "set_name", "id": 13, "name": "Ada L."},
        "cursor": {"t": "cursor", "pos": [128.5, 64.25]},
        "cursor_hide": {"t": "cursor", "pos": None},
        "ack": {"t": "ack", "seq": 17},
        "ping": {"t": "ping", "id": 14},
        "blend": {"t": "blend", "id": 15, "source": "seed", "seed": 77, "truncation": 0.5, "steps": 60},
        "blend_upload": {"t": "blend", "id": 16, "source": "upload"},
        "hello_secret": {
            "t": "hello",
            "v": PROTOCOL_VERSION,
            "cap": "Zk3v9Qm2LxTQ0n8Yb1cR5wHs7JdUe4Ap",
            "name": "Ada",
            "client_id": "c7Hq2LmX9vTz",
            "secret": "q8Rk2vXa9LmT3wZpYc7HdN5s",
        },
        "reset": {"t": "reset", "id": 17},
        "set_params_space": {"t": "set_params", "id": 18, "params": {"space": "w"}},
    }


def server_examples() -> dict[str, dict[str, Any]]:
    state = {
        "image": IMAGE,
        "pairs": PAIRS,
        "mask": {"w": 64, "h": 64, "cells": mask_cells()},
        "params": PARAMS,
        "status": "idle",
        "step": 0,
        "drag": 0,
        "history": {"index": 0, "size": 1},
    }
    welcome_limits = {
        k: LIMITS[k]
        for k in (
            "max_message_bytes",
            "max_pairs",
            "max_stroke_points",
            "max_name_chars",
            "cursor_hz",
            "frame_credits",
            "ping_interval_s",
            "edit_rate_per_s",
        )
    }
    return {
        "welcome": {
            "t": "welcome",
            "v": PROTOCOL_VERSION,
            "room": "Rk2mQ8xZ0aPw",
            "you": "m1",
            "role": "editor",
            "name": "Ada",
            "colour": "#e6194b",
            "limits": welcome_limits,
        },
        "snapshot": {"t": "snapshot", "version": 7, "state": state, "members": MEMBERS, "spectators": 3},
        "op_add_pair": {"t": "op", "v": 8, "op": "add_pair", "by": "m1", "ref": 1, "patch": {"pairs": PAIRS}},
        "op_set_params": {
            "t": "op",
            "v": 9,
            "op": "set_params",
            "by": "m2",
            "ref": 7,
            "patch": {"params": {**PARAMS, "lr": 0.001, "max_steps": 200}},
        },
        "op_start": {
            "t": "op",
            "v": 10,
            "op": "start",
            "by": "m1",
            "ref": 8,
            "patch": {"status": "running", "step": 0, "drag": 1},
        },
        "op_finish": {
            "t": "op",
            "v": 11,
            "op": "finish",
            "by": None,
            "ref": None,
            "patch": {
                "image": {**IMAGE, "latent": LATENT},
                "pairs": [{**PAIRS[0], "handle": [139.5, 110.5]}, {**PAIRS[1], "handle": [70.5, 181.5]}],
                "status": "idle",
                "step": 57,
                "history": {"index": 1, "size": 2},
            },
        },
        "op_undo": {  # m1 takes back their drag (op_start, op_finish): its handles and image
            "t": "op",
            "v": 12,
            "op": "undo",
            "by": "m1",
            "ref": 11,
            "patch": {
                "pairs": PAIRS,
                "image": IMAGE,
                "step": 0,
                "history": {"index": 0, "size": 2},
            },
        },
        "op_undo_mask": {  # m2 takes back their mask stroke: only the cells nobody changed since
            "t": "op",
            "v": 16,
            "op": "undo",
            "by": "m2",
            "ref": 5,
            "patch": {"mask": {"w": 64, "h": 64, "cells": bytes(64 * 64)}},
        },
        "undo_state": {
            "t": "undo_state",
            "undo": 3,
            "redo": 1,
            "undo_kind": "paint_mask",
            "redo_kind": "drag",
        },
        "undo_state_empty": {"t": "undo_state", "undo": 0, "redo": 0, "undo_kind": None, "redo_kind": None},
        "error_undo_conflict": {
            "t": "error",
            "code": "undo_conflict",
            "message": "cannot undo your drag: someone else changed the image since, "
            "so it is skipped; undo again for your action before it",
            "ref": 11,
        },
        "op_reset": {
            "t": "op",
            "v": 15,
            "op": "reset",
            "by": "m1",
            "ref": 17,
            "patch": {
                "image": IMAGE,
                "pairs": [],
                "mask": {"w": 64, "h": 64, "cells": bytes(64 * 64)},
                "step": 0,
                "history": {"index": 3, "size": 4},
            },
        },
        "snapshot_interrupted": {
            "t": "snapshot",
            "version": 31,
            "state": {
                **state,
                "image": {**IMAGE, "latent": LATENT},
                "step": 36,
                "drag": 4,
                "history": {"index": 2, "size": 3},
                "interrupted": {"kind": "drag", "drag": 4, "step": 36, "by": "m1"},
            },
            "members": MEMBERS[:1],
            "spectators": 0,
        },
        "op_upload": {
            "t": "op",
            "v": 13,
            "op": "upload",
            "by": None,
            "ref": None,
            "patch": {
                "status": "projecting",
                "step": 0,
                "drag": 3,
                "task": {"kind": "upload", "method": "optimize", "max_steps": 100, "by": None},
                "upload": {"key": UPLOAD_KEY, "w": 256, "h": 256},
            },
        },
        "op_finish_projection": {
            "t": "op",
            "v": 14,
            "op": "finish",
            "by": None,
            "ref": None,
            "patch": {
                "image": {**IMAGE, "seed": None, "latent": LATENT},
                "pairs": [],
                "mask": {"w": 64, "h": 64, "cells": bytes(64 * 64)},
                "history": {"index": 2, "size": 3},
                "status": "idle",
                "step": 100,
                "task": None,
            },
        },
        "frame_projecting": {
            "t": "frame",
            "seq": 40,
            "drag": 3,
            "step": 23,
            "status": "projecting",
            "w": 256,
            "h": 256,
            "jpeg": TINY_JPEG,
            "handles": {},
            "psnr": 21.5,
            "loss": 0.125,
        },
        "status_projecting": {"t": "status", "status": "projecting", "reason": None, "drag": 3, "step": 0},
        "status_converged": {"t": "status", "status": "idle", "reason": "converged", "drag": 3, "step": 64},
        "presence_join": {"t": "presence", "ev": "join", "member": MEMBERS[1]},
        "presence_leave": {"t": "presence", "ev": "leave", "id": "m2"},
        "presence_rename": {"t": "presence", "ev": "rename", "id": "m1", "name": "Ada L."},
        "presence_cursor": {"t": "presence", "ev": "cursor", "id": "m2", "pos": [128.5, 64.25]},
        "presence_cursor_hide": {"t": "presence", "ev": "cursor", "id": "m2", "pos": None},
        "presence_spectators": {"t": "presence", "ev": "spectators", "count": 4},
        "frame": {
            "t": "frame",
            "seq": 17,
            "drag": 1,
            "step": 12,
            "status": "running",
            "w": 256,
            "h": 256,
            "jpeg": TINY_JPEG,
            "handles": {"p1": [112.5, 117.25], "p2": [63.5, 193.75]},
            "fps": 27.5,
        },
        "status_running": {"t": "status", "status": "running", "reason": None, "drag": 1, "step": 0},
        "status_done": {"t": "status", "status": "idle", "reason": "reached", "drag": 1, "step": 57},
        "frame_lost": {
            "t": "frame",
            "seq": 40,
            "drag": 4,
            "step": 9,
            "status": "stopping",
            "w": 128,
            "h": 128,
            "jpeg": TINY_JPEG,
            "handles": {"p1": [64.5, 70.25], "p2": [30.5, 41.75]},
            "lost": ["p2"],
        },
        "status_lost": {"t": "status", "status": "idle", "reason": "lost", "drag": 4, "step": 9},
        "status_stalled": {"t": "status", "status": "idle", "reason": "stalled", "drag": 5, "step": 23},
        "status_error": {
            "t": "status",
            "status": "idle",
            "reason": "error",
            "drag": 2,
            "step": 3,
            "message": "CUDA out of memory",
        },
        "error": {
            "t": "error",
            "code": "forbidden",
            "message": "view-only link: editing is not allowed",
            "ref": 5,
        },
        "error_field": {
            "t": "error",
            "code": "invalid_field",
            "message": "pos: expected [x, y]",
            "ref": 2,
            "field": "pos",
        },
        "pong": {"t": "pong", "ref": 14, "time": 1795000000.25},
    }


def invalid_examples() -> dict[str, dict[str, Any]]:
    """Client messages the server must refuse, with the error code (client examples' bounds)."""
    cases = {
        "unknown_type": ({"t": "explode", "id": 1}, "unknown_type"),
        "unknown_field": ({"t": "start", "id": 1, "force": True}, "invalid_field"),
        "missing_field": ({"t": "add_pair", "id": 1, "pair": "p1", "handle": [1.5, 2.5]}, "invalid_field"),
        "bool_as_int": ({"t": "new_image", "id": 1, "seed": True}, "invalid_field"),
        "float_as_int": ({"t": "new_image", "id": 1, "seed": 3.5}, "invalid_field"),
        "string_as_number": (
            {"t": "move_point", "id": 1, "pair": "p1", "which": "handle", "pos": ["1", 2]},
            "invalid_field",
        ),
        "point_outside": (
            {"t": "move_point", "id": 1, "pair": "p1", "which": "handle", "pos": [256.0, 10.5]},
            "out_of_bounds",
        ),
        "point_negative": (
            {"t": "add_pair", "id": 1, "pair": "p1", "handle": [-0.5, 2.5], "target": [3.5, 4.5]},
            "out_of_bounds",
        ),
        "point_three_coords": ({"t": "cursor", "pos": [1.5, 2.5, 3.5]}, "invalid_field"),
        "bad_enum": (
            {"t": "move_point", "id": 1, "pair": "p1", "which": "both", "pos": [1.5, 2.5]},
            "invalid_field",
        ),
        "bad_pair_id": ({"t": "remove_pair", "id": 1, "pair": "p 1"}, "invalid_field"),
        "name_too_long": ({"t": "set_name", "id": 1, "name": "x" * 33}, "invalid_field"),
        "name_control_chars": ({"t": "set_name", "id": 1, "name": "Ada\u202e"}, "invalid_field"),
        "lr_out_of_range": ({"t": "set_params", "id": 1, "params": {"lr": 5.0}}, "invalid_field"),
        "params_empty": ({"t": "set_params", "id": 1, "params": {}}, "invalid_field"),
        "params_unknown": ({"t": "set_params", "id": 1, "params": {"beta": 1.0}}, "invalid_field"),
        "stroke_empty": (
            {"t": "paint_mask", "id": 1, "mode": "fixed", "radius": 4.5, "points": []},
            "invalid_field",
        ),
        "negative_id": ({"t": "ping", "id": -1}, "invalid_field"),
        "seed_too_big": ({"t": "new_image", "id": 1, "seed": 2**32}, "invalid_field"),
        "blend_bad_source": ({"t": "blend", "id": 1, "source": "camera"}, "invalid_field"),
        "blend_steps_zero": ({"t": "blend", "id": 1, "source": "upload", "steps": 0}, "invalid_field"),
        "blend_seed_missing": ({"t": "blend", "id": 1, "source": "seed"}, "invalid_field"),
        "blend_upload_with_seed": ({"t": "blend", "id": 1, "source": "upload", "seed": 3}, "invalid_field"),
        "blend_upload_with_truncation": (
            {"t": "blend", "id": 1, "source": "upload", "truncation": 0.5},
            "invalid_field",
        ),
        "set_name_empty": ({"t": "set_name", "id": 1, "name": "   "}, "invalid_field"),
        "space_unknown": ({"t": "set_params", "id": 1, "params": {"space": "z"}}, "invalid_field"),
        "reset_with_seed": ({"t": "reset", "id": 1, "seed": 3}, "invalid_field"),
    }
    return {
        name: {"message": msg, "bounds": list(GOLDEN_BOUNDS), "error": code}
        for name, (msg, code) in cases.items()
    }


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def files() -> dict[Path, bytes]:
    """Every file this script writes, path -> content."""
    out: dict[Path, bytes] = {SHARED / "protocol.json": dumps(spec_json()).encode()}
    golden = SHARED / "golden"
    for sub, examples in (("c2s", client_examples()), ("s2c", server_examples())):
        for name, msg in examples.items():
            out[golden / sub / f"{name}.json"] = dumps(json_form(msg)).encode()
            out[golden / sub / f"{name}.msgpack"] = encode(msg)
    for name, case in invalid_examples().items():
        out[golden / "invalid" / f"{name}.json"] = dumps(case).encode()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the files on disk, write nothing")
    args = ap.parse_args(argv)
    wanted = files()
    if args.check:
        stale = [
            str(p.relative_to(ROOT)) for p, data in wanted.items() if not p.exists() or p.read_bytes() != data
        ]
        for p in stale:
            print(f"stale: {p}")
        return 1 if stale else 0
    for sub in ("c2s", "s2c", "invalid"):  # drop files of examples that no longer exist
        d = SHARED / "golden" / sub
        if d.exists():
            for p in d.iterdir():
                if p not in wanted:
                    p.unlink()
    for p, data in wanted.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    print(f"wrote {len(wanted)} files under {SHARED.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
