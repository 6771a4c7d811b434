"""The room store's SQLite schema, and how core records map to its rows and back.

``server/storage/store.py`` opens the file and runs the queries; this module says what the tables
are (``SCHEMA``, versioned by ``SCHEMA_VERSION``) and converts between their rows and the core's
records (``RoomRecord``, ``HistoryEntry``, ``RunRecord``). The core and the standard library only.

Uploads (issue 7, real images): the preprocessed target of an upload (a PNG at the model's
resolution) is a content-addressed blob in ``uploads``; ``room_uploads`` says which upload is a
room's last one. Both tables are additive (``CREATE TABLE IF NOT EXISTS``), so a store written
before them opens unchanged.

Identities, origins and runs (issue 17), additive too: ``room_members`` keeps the editors a room
remembers by the hash of their browser's secret (member id, name, colour); ``room_origins`` the
image a room was created with (``reset`` returns to it; rooms saved before it use their first
history entry); ``room_runs`` the drag or projection running when the room was last saved, with a
drag's latest checkpoint (a recent frame's latent), so that after a crash the room reports the run
as interrupted and keeps that frame.

Per-person undo (issue 17), additive: ``history_ids`` gives each history entry its id (a JSON list
in the entries' order; rooms saved before it number them anew, with no undo stacks naming them),
``room_undo`` one row per member with undo or redo stacks (JSON, server.core.undo), written only for
the members whose stacks changed.

Life cycle (issue 17), additive: ``room_life`` says when a room was last used (someone in it, or
an HTTP download), whether anyone ever joined it and whether it is archived (not loaded by the
server: every room is, after a restart, until someone opens it; rooms without a row count as
archived, used when last saved). ``deleted_rooms`` keeps the ids of deleted rooms for a while
(``store.TOMBSTONE_S``), so that their links answer "deleted" rather than "not found".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from server.core.mask import MaskGrid
from server.core.state import (
    HistoryEntry,
    ImageInfo,
    Layout,
    MemberRecord,
    Pair,
    Params,
    RoomRecord,
    RunRecord,
    UploadInfo,
    pairs_to_wire,
)

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rooms (
    id TEXT PRIMARY KEY,
    edit_hash TEXT NOT NULL,            -- sha256 hex of the edit capability (never the token)
    view_hash TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    version INTEGER NOT NULL,
    drag INTEGER NOT NULL,
    next_member INTEGER NOT NULL,
    image TEXT NOT NULL,                -- JSON, protocol wire form
    pairs TEXT NOT NULL,                -- JSON list
    params TEXT NOT NULL,               -- JSON
    mask BLOB NOT NULL,                 -- grid cells (grid size follows from the image size)
    history_index INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    pos INTEGER NOT NULL,
    kind TEXT NOT NULL,
    by_member TEXT,
    image TEXT NOT NULL,
    latent TEXT,                        -- = image.latent, for garbage collection
    before_pairs TEXT NOT NULL,
    before_mask BLOB,                   -- NULL: empty mask
    after_pairs TEXT NOT NULL,
    after_mask BLOB,
    PRIMARY KEY (room_id, pos)
);
CREATE TABLE IF NOT EXISTS latents (key TEXT PRIMARY KEY, data BLOB NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS uploads (
    key TEXT PRIMARY KEY,               -- sha256 hex of data
    data BLOB NOT NULL,                 -- the preprocessed target, PNG at the model's resolution
    w INTEGER NOT NULL,
    h INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS room_uploads (
    room_id TEXT PRIMARY KEY REFERENCES rooms(id) ON DELETE CASCADE,
    key TEXT NOT NULL                   -- the room's last upload
);
CREATE TABLE IF NOT EXISTS room_origins (
    room_id TEXT PRIMARY KEY REFERENCES rooms(id) ON DELETE CASCADE,
    image TEXT NOT NULL                 -- JSON: the image the room was created with
);
CREATE TABLE IF NOT EXISTS room_members (
    room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    id TEXT NOT NULL,                   -- member id
    secret_hash TEXT NOT NULL,          -- sha256 hex of "<room id>:<browser secret>" (never the secret)
    name TEXT NOT NULL,
    colour TEXT NOT NULL,
    seen REAL NOT NULL,
    PRIMARY KEY (room_id, id)
);
CREATE TABLE IF NOT EXISTS room_runs (
    room_id TEXT PRIMARY KEY REFERENCES rooms(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,                 -- drag, upload or blend
    drag INTEGER NOT NULL,              -- run number
    by_member TEXT,
    started REAL NOT NULL,
    step INTEGER NOT NULL,              -- the checkpoint's step (0: none yet)
    latent TEXT,                        -- the checkpoint's latent key
    before_pairs TEXT NOT NULL,         -- points and mask when the run started
    before_mask BLOB,
    pairs TEXT NOT NULL                 -- points (tracked handles) at the checkpoint
);
CREATE TABLE IF NOT EXISTS history_ids (
    room_id TEXT PRIMARY KEY REFERENCES rooms(id) ON DELETE CASCADE,
    ids TEXT NOT NULL                   -- JSON list: the id of each history entry, by pos
);
CREATE TABLE IF NOT EXISTS room_undo (
    room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    member_id TEXT NOT NULL,
    stacks TEXT NOT NULL,               -- JSON: {"undo": [action...], "redo": [action...]}
    PRIMARY KEY (room_id, member_id)
);
CREATE TABLE IF NOT EXISTS room_life (
    room_id TEXT PRIMARY KEY REFERENCES rooms(id) ON DELETE CASCADE,
    used REAL NOT NULL,                 -- wall clock when someone was last in the room (or created it)
    joined INTEGER NOT NULL,            -- 1 once anyone has joined it
    archived REAL                       -- wall clock when it was archived (unloaded); NULL: live
);
CREATE TABLE IF NOT EXISTS deleted_rooms (
    id TEXT PRIMARY KEY,
    deleted REAL NOT NULL,              -- wall clock
    why TEXT NOT NULL                   -- "editor", "unused", "never joined"
);
"""


def _dumps(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"), allow_nan=False)


def _history_row(room_id: str, pos: int, e: HistoryEntry) -> tuple:
    return (
        room_id,
        pos,
        e.kind,
        e.by,
        _dumps(e.image.to_wire()),
        e.image.latent,
        _dumps(pairs_to_wire(e.before.pairs)),
        None if e.before.mask is None else e.before.mask.cells,
        _dumps(pairs_to_wire(e.after.pairs)),
        None if e.after.mask is None else e.after.mask.cells,
    )


def _run_row(room_id: str, run: RunRecord) -> tuple:
    return (
        room_id,
        run.kind,
        run.drag,
        run.by,
        run.started,
        run.step,
        run.latent,
        _dumps(pairs_to_wire(run.before.pairs)),
        None if run.before.mask is None else run.before.mask.cells,
        _dumps(pairs_to_wire(run.pairs)),
    )


def _run_record(r: tuple, image: ImageInfo) -> RunRecord:
    _rid, kind, drag, by, started, step, latent, before_pairs, before_mask, pairs = r
    grid = MaskGrid.empty(image.w, image.h)
    mask = None if before_mask is None else MaskGrid(image.w, image.h, grid.w, grid.h, bytes(before_mask))
    return RunRecord(
        kind=kind,
        drag=drag,
        by=by,
        before=Layout(tuple(Pair.from_wire(p) for p in json.loads(before_pairs)), mask),
        step=step,
        latent=latent,
        pairs=tuple(Pair.from_wire(p) for p in json.loads(pairs)),
        started=started,
    )


def _room_record(r: tuple, hist: list[tuple], upload: UploadInfo | None = None) -> RoomRecord:
    (
        rid,
        edit_hash,
        view_hash,
        created,
        _updated,
        version,
        drag,
        next_member,
        image,
        pairs,
        params,
        mask,
        index,
    ) = r
    img = ImageInfo.from_wire(json.loads(image))
    empty = MaskGrid.empty(img.w, img.h)

    def grid(cells: bytes | None) -> MaskGrid | None:
        return None if cells is None else MaskGrid(img.w, img.h, empty.w, empty.h, bytes(cells))

    def layout(pairs_json: str, cells: bytes | None) -> Layout:
        return Layout(tuple(Pair.from_wire(p) for p in json.loads(pairs_json)), grid(cells))

    entries = tuple(
        HistoryEntry(kind, ImageInfo.from_wire(json.loads(im)), layout(bp, bm), layout(ap, am), by)
        for (_rid, _pos, kind, by, im, _latent, bp, bm, ap, am) in hist
    )
    if not 0 <= index < len(entries):
        raise ValueError(f"history index {index} outside {len(entries)} entries")
    return RoomRecord(
        id=rid,
        edit_hash=edit_hash,
        view_hash=view_hash,
        image=img,
        pairs=tuple(Pair.from_wire(p) for p in json.loads(pairs)),
        mask=grid(mask) or empty,
        params=Params.from_wire(json.loads(params)),
        history=entries,
        history_index=index,
        version=version,
        drag=drag,
        next_member=next_member,
        created=created,
        upload=upload,
    )


log = logging.getLogger("server.storage.store")


def query_room_rows(execute: Callable[[str, tuple], Any], room_id: str | None, mark: str) -> dict[str, Any]:
    """Every table's rows of the stored rooms (``room_id``: that one only), through ``execute``
    (a DB-API cursor's, in one transaction); ``mark`` is the driver's placeholder ("?" or "%s")."""
    args = () if room_id is None else (room_id,)

    def rows(sql: str, col: str = "room_id") -> list[tuple]:
        return execute(sql.format("" if room_id is None else f" WHERE {col} = {mark}"), args).fetchall()

    return {
        "rooms": rows("SELECT * FROM rooms{} ORDER BY created, id", "id"),
        "hist": rows("SELECT * FROM history{} ORDER BY room_id, pos"),
        "ups": rows(
            "SELECT r.room_id, u.key, u.w, u.h FROM room_uploads r JOIN uploads u ON u.key = r.key{}",
            "r.room_id",
        ),
        "origins": dict(rows("SELECT room_id, image FROM room_origins{}")),
        "mems": rows(
            "SELECT room_id, id, secret_hash, name, colour, seen FROM room_members{} ORDER BY room_id, seen"
        ),
        "runs": {r[0]: r for r in rows("SELECT * FROM room_runs{}")},
        "entry_ids": dict(rows("SELECT room_id, ids FROM history_ids{}")),
        "undo": rows("SELECT room_id, member_id, stacks FROM room_undo{}"),
    }


def records_from_rows(t: dict[str, Any]) -> list[RoomRecord]:
    """The room records of ``query_room_rows``' rows; an unreadable room is skipped (logged), an
    unreadable undo stack loses only that member's undo."""
    undo: dict[str, dict[str, Any]] = {}
    for rid, member_id, stacks in t["undo"]:
        try:
            undo.setdefault(rid, {})[member_id] = json.loads(stacks)
        except ValueError as e:
            log.error("store: room %s: unreadable undo stacks of %s: %s", rid, member_id, e)
    uploads = {rid: UploadInfo(key, w, h) for rid, key, w, h in t["ups"]}
    members: dict[str, list[MemberRecord]] = {}
    for rid, *m in t["mems"]:
        members.setdefault(rid, []).append(MemberRecord(*m))
    by_room: dict[str, list[tuple]] = {}
    for h in t["hist"]:
        by_room.setdefault(h[0], []).append(h)
    origins, runs, entry_ids = t["origins"], t["runs"], t["entry_ids"]
    out = []
    for r in t["rooms"]:
        try:
            rec = _room_record(r, by_room.get(r[0], []), uploads.get(r[0]))
            extra: dict[str, Any] = {"members": tuple(members.get(rec.id, ()))}
            if rec.id in origins:
                extra["original"] = ImageInfo.from_wire(json.loads(origins[rec.id]))
            if rec.id in runs:
                extra["run"] = _run_record(runs[rec.id], rec.image)
            ids = json.loads(entry_ids[rec.id]) if rec.id in entry_ids else None
            if isinstance(ids, list) and len(ids) == len(rec.history):
                pairs = zip(rec.history, ids, strict=True)
                extra["history"] = tuple(replace(e, id=int(i)) for e, i in pairs)
                extra["undo"] = undo.get(rec.id, {})
            out.append(replace(rec, **extra))
        except (KeyError, TypeError, ValueError) as e:  # one bad row must not lose the others
            log.error("store: skipping unreadable room %s: %s", r[0], e)
    return out
