"""SQLite persistence for rooms: state, shared history and latent blobs (standard library only).

One file, ``<data_dir>/livedrag.sqlite3``, in WAL mode. Rooms are written on commits (every
applied edit and history commit), never per tick; latents are content-addressed blobs (sha256
of the bytes the engine serialised) that history entries refer to by key. Capabilities are kept
only as sha256 hashes. Every sqlite failure (disk full, read-only file, corrupt database) is
raised as :class:`StoreError`, so the caller can report it and keep its in-memory state.
Thread-safe: the worker may put latents from its thread while the event loop saves rooms.

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
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from server.core.ids import latent_key
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

log = logging.getLogger(__name__)

DB_NAME = "livedrag.sqlite3"
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
"""


class StoreError(Exception):
    """The database could not be read or written (the message says why, e.g. disk full)."""


class Store:
    """Rooms and latents in one SQLite file under ``data_dir`` (None: in memory, for tests)."""

    def __init__(self, data_dir: str | Path | None = None) -> None:
        self.path = None if data_dir is None else Path(data_dir) / DB_NAME
        self._lock = threading.Lock()
        try:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                ":memory:" if self.path is None else str(self.path), check_same_thread=False, timeout=10.0
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
            self._conn.execute("PRAGMA foreign_keys=ON")
            with self._conn:
                self._conn.executescript(SCHEMA)
                row = self._conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                if row is None:
                    self._conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                elif int(row[0]) != SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path}: schema version {row[0]}, this server knows {SCHEMA_VERSION}"
                    )
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"cannot open the room store at {self.path or ':memory:'}: {e}") from e

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self, what: str) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock; sqlite errors become StoreError naming ``what``."""
        with self._lock:
            try:
                with self._conn:
                    yield self._conn
            except sqlite3.Error as e:
                raise StoreError(f"{what}: {e}") from e

    # --- rooms ------------------------------------------------------------------------------

    def save_room(self, rec: RoomRecord, history: bool = True, members: bool = True) -> None:
        """Write a room's state (and its run in progress); with ``history``, rewrite its history
        entries too; with ``members``, its remembered editors."""
        row = (
            rec.id,
            rec.edit_hash,
            rec.view_hash,
            rec.created,
            time.time(),
            rec.version,
            rec.drag,
            rec.next_member,
            _dumps(rec.image.to_wire()),
            _dumps(pairs_to_wire(rec.pairs)),
            _dumps(rec.params.to_wire()),
            rec.mask.cells,
            rec.history_index,
        )
        with self._tx(f"saving room {rec.id}") as db:
            db.execute(
                """INSERT INTO rooms VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(id) DO UPDATE SET updated=excluded.updated, version=excluded.version,
                   drag=excluded.drag, next_member=excluded.next_member, image=excluded.image,
                   pairs=excluded.pairs, params=excluded.params, mask=excluded.mask,
                   history_index=excluded.history_index""",
                row,
            )
            if rec.upload is None:
                db.execute("DELETE FROM room_uploads WHERE room_id=?", (rec.id,))
            else:
                db.execute(
                    "INSERT INTO room_uploads VALUES (?,?) "
                    "ON CONFLICT(room_id) DO UPDATE SET key=excluded.key",
                    (rec.id, rec.upload.key),
                )
            if rec.original is not None:
                db.execute(
                    "INSERT OR IGNORE INTO room_origins VALUES (?,?)",
                    (rec.id, _dumps(rec.original.to_wire())),
                )
            db.execute("DELETE FROM room_runs WHERE room_id=?", (rec.id,))
            if rec.run is not None:
                db.execute("INSERT INTO room_runs VALUES (?,?,?,?,?,?,?,?,?,?)", _run_row(rec.id, rec.run))
            if members:
                db.execute("DELETE FROM room_members WHERE room_id=?", (rec.id,))
                db.executemany(
                    "INSERT INTO room_members VALUES (?,?,?,?,?,?)",
                    [(rec.id, m.id, m.secret_hash, m.name, m.colour, m.seen) for m in rec.members],
                )
            if history:
                db.execute("DELETE FROM history WHERE room_id=?", (rec.id,))
                db.executemany(
                    "INSERT INTO history VALUES (?,?,?,?,?,?,?,?,?,?)",
                    [_history_row(rec.id, pos, e) for pos, e in enumerate(rec.history)],
                )
                db.execute(
                    "INSERT INTO history_ids VALUES (?,?) "
                    "ON CONFLICT(room_id) DO UPDATE SET ids=excluded.ids",
                    (rec.id, _dumps([e.id for e in rec.history])),
                )
            for member_id, stacks in rec.undo.items():  # only the members whose stacks changed
                if stacks is None:
                    db.execute("DELETE FROM room_undo WHERE room_id=? AND member_id=?", (rec.id, member_id))
                else:
                    db.execute(
                        "INSERT INTO room_undo VALUES (?,?,?) "
                        "ON CONFLICT(room_id, member_id) DO UPDATE SET stacks=excluded.stacks",
                        (rec.id, member_id, _dumps(stacks)),
                    )

    def load_rooms(self) -> list[RoomRecord]:
        """Every stored room, oldest first."""
        with self._tx("loading rooms") as db:
            rooms = db.execute("SELECT * FROM rooms ORDER BY created, id").fetchall()
            hist = db.execute("SELECT * FROM history ORDER BY room_id, pos").fetchall()
            ups = db.execute(
                "SELECT r.room_id, u.key, u.w, u.h FROM room_uploads r JOIN uploads u ON u.key = r.key"
            ).fetchall()
            origins = dict(db.execute("SELECT room_id, image FROM room_origins").fetchall())
            mems = db.execute(
                "SELECT room_id, id, secret_hash, name, colour, seen FROM room_members ORDER BY room_id, seen"
            ).fetchall()
            runs = {r[0]: r for r in db.execute("SELECT * FROM room_runs").fetchall()}
            entry_ids = dict(db.execute("SELECT room_id, ids FROM history_ids").fetchall())
            undo_rows = db.execute("SELECT room_id, member_id, stacks FROM room_undo").fetchall()
        undo: dict[str, dict[str, Any]] = {}
        for rid, member_id, stacks in undo_rows:
            try:
                undo.setdefault(rid, {})[member_id] = json.loads(stacks)
            except ValueError as e:  # one unreadable stack loses only that member's undo
                log.error("store: room %s: unreadable undo stacks of %s: %s", rid, member_id, e)
        uploads = {rid: UploadInfo(key, w, h) for rid, key, w, h in ups}
        members: dict[str, list[MemberRecord]] = {}
        for rid, *m in mems:
            members.setdefault(rid, []).append(MemberRecord(*m))
        by_room: dict[str, list[tuple]] = {}
        for h in hist:
            by_room.setdefault(h[0], []).append(h)
        out = []
        for r in rooms:
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

    def delete_room(self, room_id: str) -> None:
        with self._tx(f"deleting room {room_id}") as db:
            db.execute("DELETE FROM rooms WHERE id=?", (room_id,))

    # --- latents ----------------------------------------------------------------------------

    def put_latent(self, data: bytes) -> str:
        """Store serialised latent bytes; returns their key (sha256 hex). Idempotent."""
        key = latent_key(data)
        with self._tx("saving a latent") as db:
            db.execute("INSERT OR IGNORE INTO latents VALUES (?,?,?)", (key, bytes(data), time.time()))
        return key

    def get_latent(self, key: str) -> bytes | None:
        with self._tx("reading a latent") as db:
            row = db.execute("SELECT data FROM latents WHERE key=?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    # --- uploads ----------------------------------------------------------------------------

    def put_upload(self, data: bytes, w: int, h: int) -> UploadInfo:
        """Store an upload's preprocessed target (PNG bytes, ``w`` x ``h``). Idempotent."""
        key = latent_key(data)
        with self._tx("saving an upload") as db:
            db.execute(
                "INSERT OR IGNORE INTO uploads VALUES (?,?,?,?,?)", (key, bytes(data), w, h, time.time())
            )
        return UploadInfo(key, w, h)

    def get_upload(self, key: str) -> bytes | None:
        with self._tx("reading an upload") as db:
            row = db.execute("SELECT data FROM uploads WHERE key=?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def gc_uploads(self, older_than_s: float = 3600.0) -> int:
        """Delete uploads no room refers to (older than ``older_than_s``). Returns how many went."""
        with self._tx("collecting uploads") as db:
            cur = db.execute(
                "DELETE FROM uploads WHERE created < ? AND key NOT IN (SELECT key FROM room_uploads)",
                (time.time() - older_than_s,),
            )
            return cur.rowcount

    def gc_latents(self, older_than_s: float = 3600.0) -> int:
        """Delete latents no history entry refers to (older than ``older_than_s``, so a latent
        the worker has just put and not yet committed survives). Returns how many went."""
        with self._tx("collecting latents") as db:
            cur = db.execute(
                """DELETE FROM latents WHERE created < ? AND key NOT IN
                   (SELECT latent FROM history WHERE latent IS NOT NULL)
                   AND key NOT IN (SELECT latent FROM room_runs WHERE latent IS NOT NULL)""",
                (time.time() - older_than_s,),
            )
            return cur.rowcount


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
