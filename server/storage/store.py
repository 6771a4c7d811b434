"""SQLite persistence for rooms: state, shared history and latent blobs (standard library only).

One file, ``<data_dir>/livedrag.sqlite3``, in WAL mode. Rooms are written on commits (every
applied edit and history commit), never per tick; latents are content-addressed blobs (sha256
of the bytes the engine serialised) that history entries refer to by key. Capabilities are kept
only as sha256 hashes. Every sqlite failure (disk full, read-only file, corrupt database) is
raised as :class:`StoreError`, so the caller can report it and keep its in-memory state.
Thread-safe: the worker may put latents from its thread while the event loop saves rooms.

Tables and row layouts: ``server/storage/schema.py``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from server.core.ids import latent_key
from server.core.state import RoomRecord, UploadInfo, pairs_to_wire
from server.storage.schema import (
    SCHEMA,
    SCHEMA_VERSION,
    _dumps,
    _history_row,
    _run_row,
    query_room_rows,
    records_from_rows,
)

log = logging.getLogger(__name__)

DB_NAME = "livedrag.sqlite3"
TOMBSTONE_S = 180 * 86400.0  # how long a deleted room's id is remembered as deleted


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
        return self._load(None)

    def load_room(self, room_id: str) -> RoomRecord | None:
        """One stored room (None: no such room, or it cannot be read: the log says why)."""
        found = self._load(room_id)
        return found[0] if found else None

    def _load(self, room_id: str | None) -> list[RoomRecord]:
        """The stored rooms (``room_id``: that one only)."""
        with self._tx("loading rooms") as db:
            rows = query_room_rows(db.execute, room_id, "?")
        return records_from_rows(rows)

    def delete_room(self, room_id: str, why: str = "editor") -> None:
        """Delete a room with its history (its latents and uploads go at the next collection) and
        remember its id as deleted (``why``: "editor", "unused", "never joined")."""
        with self._tx(f"deleting room {room_id}") as db:
            db.execute("DELETE FROM rooms WHERE id=?", (room_id,))
            db.execute("INSERT OR REPLACE INTO deleted_rooms VALUES (?,?,?)", (room_id, time.time(), why))

    # --- life cycle -------------------------------------------------------------------------

    def room_hashes(self, room_id: str) -> tuple[str, str] | None:
        """The stored room's (edit_hash, view_hash), without loading it; None: no such room."""
        with self._tx("looking up a room") as db:
            row = db.execute("SELECT edit_hash, view_hash FROM rooms WHERE id=?", (room_id,)).fetchone()
        return None if row is None else (row[0], row[1])

    def deleted(self, room_id: str) -> bool:
        """Whether the room was deleted (within the last ``TOMBSTONE_S``)."""
        with self._tx("looking up a room") as db:
            return db.execute("SELECT 1 FROM deleted_rooms WHERE id=?", (room_id,)).fetchone() is not None

    def room_joined(self, room_id: str) -> bool:
        """Whether anyone ever joined the room (rooms stored before the life cycle: yes)."""
        with self._tx("looking up a room") as db:
            row = db.execute("SELECT joined FROM room_life WHERE room_id=?", (room_id,)).fetchone()
        return row is None or bool(row[0])

    def touch_rooms(self, used: float, room_ids: list[str], joined: bool = False) -> None:
        """The rooms are live and in use at wall time ``used`` (``joined``: someone joined them)."""
        with self._tx("saving room use") as db:
            db.executemany(
                """INSERT INTO room_life VALUES (?,?,?,NULL) ON CONFLICT(room_id) DO UPDATE SET
                   used=excluded.used, joined=max(joined, excluded.joined), archived=NULL""",
                [(rid, used, int(joined)) for rid in room_ids],
            )

    def archive_room(self, room_id: str, used: float, at: float) -> None:
        """Mark the room archived at ``at``, last used at ``used`` (its state is saved already)."""
        with self._tx(f"archiving room {room_id}") as db:
            db.execute(
                """INSERT INTO room_life VALUES (?,?,1,?) ON CONFLICT(room_id) DO UPDATE SET
                   used=excluded.used, archived=excluded.archived""",
                (room_id, used, at),
            )

    def archive_all(self, at: float) -> int:
        """Mark every room archived (at start-up: no room is loaded). Returns how many rooms are stored."""
        with self._tx("archiving rooms") as db:
            db.execute("UPDATE room_life SET archived=? WHERE archived IS NULL", (at,))
            return db.execute("SELECT count(*) FROM rooms").fetchone()[0]

    def count_rooms(self) -> int:
        with self._tx("counting rooms") as db:
            return db.execute("SELECT count(*) FROM rooms").fetchone()[0]

    def expire_rooms(self, unused_before: float, unjoined_before: float, keep: set[str]) -> list[str]:
        """Delete the rooms last used before ``unused_before``, and those nobody ever joined
        last used before ``unjoined_before`` (wall clock; ``-inf``: none), except ``keep`` (the
        live rooms); forget deleted ids older than ``TOMBSTONE_S``. Returns the deleted ids."""
        with self._tx("deleting unused rooms") as db:
            found = db.execute(
                """SELECT r.id, COALESCE(l.joined, 1) FROM rooms r LEFT JOIN room_life l ON l.room_id = r.id
                   WHERE COALESCE(l.used, r.updated) < ?
                   OR (COALESCE(l.joined, 1) = 0 AND COALESCE(l.used, r.updated) < ?)""",
                (unused_before, unjoined_before),
            ).fetchall()
            gone = [(rid, "unused" if joined else "never joined") for rid, joined in found if rid not in keep]
            now = time.time()
            for rid, why in gone:
                db.execute("DELETE FROM rooms WHERE id=?", (rid,))
                db.execute("INSERT OR REPLACE INTO deleted_rooms VALUES (?,?,?)", (rid, now, why))
            db.execute("DELETE FROM deleted_rooms WHERE deleted < ?", (now - TOMBSTONE_S,))
        return [rid for rid, _ in gone]

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
