"""The room store on PostgreSQL (psycopg 3), for a cluster: the interface of the SQLite
:class:`~server.storage.store.Store` (rooms, history, latents, uploads, the life cycle), written on
commits as SQLite is, so the :class:`~server.storage.manager.RoomManager` runs on either.

Differences from SQLite:

- **Fencing.** With ``fenced=True`` (the cluster) a room's state is written only by the node
  holding the room's current epoch (``room_fence``): :meth:`PgStore.take_fence` increments it when
  a node takes the room over and :meth:`PgStore.save_room` checks it in the same transaction; a node
  whose epoch is stale gets :class:`FencedOut` and writes nothing. New rooms start at epoch 0.
- **Outages.** A lost connection is opened again in the background; while the server is down each
  call fails with :class:`~server.storage.store.StoreError` ("database unavailable"), on the event
  loop at once, a transaction that hangs is cut off after ``call_timeout_s``
  (:mod:`server.cluster.pgconn`); the room manager keeps the edits in memory, tells the members
  once, and saves them with the next commit; the cluster retries dirty rooms every second. Every
  write is one transaction: nothing is half-written.

Thread-safe (one connection behind a lock): the worker puts latents from its thread while the
event loop saves rooms. Capabilities are kept only as sha256 hashes, as in SQLite.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from server.cluster.pgconn import PgConfig, PgConnection
from server.cluster.pgschema import MIGRATIONS, SCHEMA_VERSION
from server.core.ids import latent_key
from server.core.state import RoomRecord, UploadInfo, pairs_to_wire
from server.storage.schema import _dumps, _history_row, _run_row, query_room_rows, records_from_rows
from server.storage.store import TOMBSTONE_S, StoreError

log = logging.getLogger(__name__)


class FencedOut(StoreError):
    """Another node took the room over (its epoch is newer than ours): this node must not write it."""

    def __init__(self, room_id: str, mine: int | None, current: int) -> None:
        self.room_id = room_id
        super().__init__(f"room {room_id} belongs to epoch {current}, this node holds {mine}: not written")


class PgStore:
    """Rooms and latents in a PostgreSQL database (see the module docstring)."""

    def __init__(self, config: PgConfig | str, fenced: bool = False) -> None:
        self.config = PgConfig(config) if isinstance(config, str) else config
        self.conn = PgConnection(self.config)
        self.path = self.conn.path  # what the logs name (the SQLite store's file path)
        self.fenced = fenced
        self.fences: dict[str, int] = {}  # room id -> the epoch this node holds
        self.fenced_out: set[str] = set()  # rooms a save found taken over (the cluster drops them)
        try:
            self.conn.wait_for_connection()  # also when opened on the event loop
            with self._tx("opening the room store") as db:
                self._migrate(db)
        except BaseException:
            self.close()
            raise

    def _tx(self, what: str) -> AbstractContextManager[psycopg.Connection[Any]]:
        """One transaction (``server.cluster.pgconn``: bounded waits, a deadline per call)."""
        return self.conn.transaction(what)

    def close(self) -> None:
        self.conn.close()

    @staticmethod
    def _migrate(db: psycopg.Connection[Any]) -> None:
        db.execute("SELECT pg_advisory_xact_lock(hashtext('livedrag schema'))")  # one node at a time
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        version = 0 if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise StoreError(f"database schema version {version}, this server knows {SCHEMA_VERSION}")
        while version < SCHEMA_VERSION:
            db.execute(MIGRATIONS[version])
            version += 1
        db.execute(
            "INSERT INTO meta VALUES ('schema', %s) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
            (str(version),),
        )

    # --- fencing ------------------------------------------------------------------------------

    def take_fence(self, room_id: str) -> int:
        """This node takes the room over: the room's epoch goes up by one and is now ours."""
        with self._tx(f"taking room {room_id} over") as db:
            epoch = db.execute(
                """INSERT INTO room_fence VALUES (%s, 1) ON CONFLICT (room_id)
                   DO UPDATE SET epoch = room_fence.epoch + 1 RETURNING epoch""",
                (room_id,),
            ).fetchone()[0]
        self.fences[room_id] = int(epoch)
        self.fenced_out.discard(room_id)
        return int(epoch)

    def drop_fence(self, room_id: str) -> None:
        """This node no longer owns the room (it writes it no more)."""
        self.fences.pop(room_id, None)

    def fence_of(self, room_id: str) -> int | None:
        """The room's current epoch in the database (None: never taken over)."""
        with self._tx("reading a room's epoch") as db:
            row = db.execute("SELECT epoch FROM room_fence WHERE room_id=%s", (room_id,)).fetchone()
        return None if row is None else int(row[0])

    def _check_fence(self, db: psycopg.Connection[Any], room_id: str) -> None:
        row = db.execute("SELECT epoch FROM room_fence WHERE room_id=%s FOR UPDATE", (room_id,)).fetchone()
        mine = self.fences.get(room_id)
        if row is None:  # a new room (or one stored before fencing): it starts at our epoch
            db.execute("INSERT INTO room_fence VALUES (%s, %s)", (room_id, mine or 0))
        elif mine != int(row[0]):
            exists = db.execute("SELECT 1 FROM rooms WHERE id=%s", (room_id,)).fetchone()
            if exists is not None or mine is not None:
                self.fenced_out.add(room_id)
                raise FencedOut(room_id, mine, int(row[0]))

    # --- rooms --------------------------------------------------------------------------------

    def save_room(self, rec: RoomRecord, history: bool = True, members: bool = True) -> None:
        """Write a room's state (and its run in progress); with ``history``, rewrite its history
        entries too; with ``members``, its remembered editors. Fenced: raises FencedOut."""
        row = (
            rec.id, rec.edit_hash, rec.view_hash, rec.created, time.time(), rec.version, rec.drag,
            rec.next_member, _dumps(rec.image.to_wire()), _dumps(pairs_to_wire(rec.pairs)),
            _dumps(rec.params.to_wire()), rec.mask.cells, rec.history_index,
        )  # fmt: skip
        with self._tx(f"saving room {rec.id}") as db:
            if self.fenced:
                self._check_fence(db, rec.id)
            db.execute(
                """INSERT INTO rooms VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)
                   ON CONFLICT (id) DO UPDATE SET updated=excluded.updated, version=excluded.version,
                   drag=excluded.drag, next_member=excluded.next_member, image=excluded.image,
                   pairs=excluded.pairs, params=excluded.params, mask=excluded.mask,
                   history_index=excluded.history_index""",
                row,
            )
            if rec.upload is None:
                db.execute("DELETE FROM room_uploads WHERE room_id=%s", (rec.id,))
            else:
                db.execute(
                    "INSERT INTO room_uploads VALUES (%s,%s) "
                    "ON CONFLICT (room_id) DO UPDATE SET key=excluded.key",
                    (rec.id, rec.upload.key),
                )
            if rec.original is not None:
                db.execute(
                    "INSERT INTO room_origins VALUES (%s,%s) ON CONFLICT DO NOTHING",
                    (rec.id, _dumps(rec.original.to_wire())),
                )
            db.execute("DELETE FROM room_runs WHERE room_id=%s", (rec.id,))
            if rec.run is not None:
                db.execute(
                    "INSERT INTO room_runs VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", _run_row(rec.id, rec.run)
                )
            cur = db.cursor()
            if members:
                db.execute("DELETE FROM room_members WHERE room_id=%s", (rec.id,))
                cur.executemany(
                    "INSERT INTO room_members VALUES (%s,%s,%s,%s,%s,%s)",
                    [(rec.id, m.id, m.secret_hash, m.name, m.colour, m.seen) for m in rec.members],
                )
            if history:
                db.execute("DELETE FROM history WHERE room_id=%s", (rec.id,))
                cur.executemany(
                    "INSERT INTO history VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    [_history_row(rec.id, pos, e) for pos, e in enumerate(rec.history)],
                )
                db.execute(
                    "INSERT INTO history_ids VALUES (%s,%s) "
                    "ON CONFLICT (room_id) DO UPDATE SET ids=excluded.ids",
                    (rec.id, _dumps([e.id for e in rec.history])),
                )
            for member_id, stacks in rec.undo.items():  # only the members whose stacks changed
                if stacks is None:
                    db.execute("DELETE FROM room_undo WHERE room_id=%s AND member_id=%s", (rec.id, member_id))
                else:
                    db.execute(
                        """INSERT INTO room_undo VALUES (%s,%s,%s)
                           ON CONFLICT (room_id, member_id) DO UPDATE SET stacks=excluded.stacks""",
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
            rows = query_room_rows(db.execute, room_id, "%s")
        return records_from_rows(rows)

    def room_model(self, room_id: str) -> str | None:
        """The model of the room's current image, without loading it (None: no such room)."""
        with self._tx("looking up a room") as db:
            row = db.execute("SELECT image FROM rooms WHERE id=%s", (room_id,)).fetchone()
        return None if row is None else str(json.loads(row[0]).get("model", ""))

    def delete_room(self, room_id: str, why: str = "editor") -> None:
        """Delete a room with its history and remember its id as deleted."""
        with self._tx(f"deleting room {room_id}") as db:
            db.execute("DELETE FROM rooms WHERE id=%s", (room_id,))
            db.execute("DELETE FROM room_fence WHERE room_id=%s", (room_id,))
            db.execute(
                """INSERT INTO deleted_rooms VALUES (%s,%s,%s)
                   ON CONFLICT (id) DO UPDATE SET deleted=excluded.deleted, why=excluded.why""",
                (room_id, time.time(), why),
            )

    # --- life cycle ---------------------------------------------------------------------------

    def room_hashes(self, room_id: str) -> tuple[str, str] | None:
        with self._tx("looking up a room") as db:
            row = db.execute("SELECT edit_hash, view_hash FROM rooms WHERE id=%s", (room_id,)).fetchone()
        return None if row is None else (row[0], row[1])

    def deleted(self, room_id: str) -> bool:
        with self._tx("looking up a room") as db:
            return db.execute("SELECT 1 FROM deleted_rooms WHERE id=%s", (room_id,)).fetchone() is not None

    def room_joined(self, room_id: str) -> bool:
        with self._tx("looking up a room") as db:
            row = db.execute("SELECT joined FROM room_life WHERE room_id=%s", (room_id,)).fetchone()
        return row is None or bool(row[0])

    def rooms_life(self, room_ids: list[str]) -> dict[str, tuple[int, float]]:
        """(joined, last used) of each stored room of ``room_ids`` (what the life cycle knows:
        the cluster archives the least recently used first)."""
        if not room_ids:
            return {}
        with self._tx("looking up rooms") as db:
            rows = db.execute(
                """SELECT r.id, COALESCE(l.joined, 1), COALESCE(l.used, r.updated) FROM rooms r
                   LEFT JOIN room_life l ON l.room_id = r.id WHERE r.id = ANY(%s)""",
                (list(room_ids),),
            ).fetchall()
        return {rid: (int(joined), float(used)) for rid, joined, used in rows}

    def touch_rooms(self, used: float, room_ids: list[str], joined: bool = False) -> None:
        with self._tx("saving room use") as db:
            db.cursor().executemany(
                """INSERT INTO room_life VALUES (%s,%s,%s,NULL) ON CONFLICT (room_id) DO UPDATE SET
                   used=excluded.used, joined=GREATEST(room_life.joined, excluded.joined), archived=NULL""",
                [(rid, used, int(joined)) for rid in room_ids],
            )

    def archive_room(self, room_id: str, used: float, at: float) -> None:
        with self._tx(f"archiving room {room_id}") as db:
            db.execute(
                """INSERT INTO room_life VALUES (%s,%s,1,%s) ON CONFLICT (room_id) DO UPDATE SET
                   used=excluded.used, archived=excluded.archived""",
                (room_id, used, at),
            )

    def archive_all(self, at: float) -> int:
        """Count the stored rooms. Unlike SQLite nothing is marked archived: in a cluster other
        nodes hold rooms live (a node's rooms are live only while it holds their leases)."""
        return self.count_rooms()

    def count_rooms(self) -> int:
        with self._tx("counting rooms") as db:
            return int(db.execute("SELECT count(*) FROM rooms").fetchone()[0])

    def expire_rooms(self, unused_before: float, unjoined_before: float, keep: set[str]) -> list[str]:
        """Delete the rooms unused since ``unused_before`` (never joined: ``unjoined_before``),
        except ``keep``; forget deleted ids older than ``TOMBSTONE_S``. Returns the deleted ids."""
        with self._tx("deleting unused rooms") as db:
            found = db.execute(
                """SELECT r.id, COALESCE(l.joined, 1) FROM rooms r LEFT JOIN room_life l ON l.room_id = r.id
                   WHERE COALESCE(l.used, r.updated) < %s
                   OR (COALESCE(l.joined, 1) = 0 AND COALESCE(l.used, r.updated) < %s)""",
                (unused_before, unjoined_before),
            ).fetchall()
            gone = [(rid, "unused" if joined else "never joined") for rid, joined in found if rid not in keep]
            now = time.time()
            for rid, why in gone:
                db.execute("DELETE FROM rooms WHERE id=%s", (rid,))
                db.execute("DELETE FROM room_fence WHERE room_id=%s", (rid,))
                db.execute(
                    """INSERT INTO deleted_rooms VALUES (%s,%s,%s)
                       ON CONFLICT (id) DO UPDATE SET deleted=excluded.deleted, why=excluded.why""",
                    (rid, now, why),
                )
            db.execute("DELETE FROM deleted_rooms WHERE deleted < %s", (now - TOMBSTONE_S,))
        return [rid for rid, _ in gone]

    # --- latents and uploads ------------------------------------------------------------------

    def put_latent(self, data: bytes) -> str:
        key = latent_key(data)
        with self._tx("saving a latent") as db:
            db.execute(
                "INSERT INTO latents VALUES (%s,%s,%s) ON CONFLICT DO NOTHING",
                (key, bytes(data), time.time()),
            )
        return key

    def get_latent(self, key: str) -> bytes | None:
        with self._tx("reading a latent") as db:
            row = db.execute("SELECT data FROM latents WHERE key=%s", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def put_upload(self, data: bytes, w: int, h: int) -> UploadInfo:
        key = latent_key(data)
        with self._tx("saving an upload") as db:
            db.execute(
                "INSERT INTO uploads VALUES (%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
                (key, bytes(data), w, h, time.time()),
            )
        return UploadInfo(key, w, h)

    def get_upload(self, key: str) -> bytes | None:
        with self._tx("reading an upload") as db:
            row = db.execute("SELECT data FROM uploads WHERE key=%s", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def gc_uploads(self, older_than_s: float = 3600.0) -> int:
        with self._tx("collecting uploads") as db:
            cur = db.execute(
                "DELETE FROM uploads WHERE created < %s AND key NOT IN (SELECT key FROM room_uploads)",
                (time.time() - older_than_s,),
            )
            return cur.rowcount

    def gc_latents(self, older_than_s: float = 3600.0) -> int:
        with self._tx("collecting latents") as db:
            cur = db.execute(
                """DELETE FROM latents WHERE created < %s AND key NOT IN
                   (SELECT latent FROM history WHERE latent IS NOT NULL)
                   AND key NOT IN (SELECT latent FROM room_runs WHERE latent IS NOT NULL)""",
                (time.time() - older_than_s,),
            )
            return cur.rowcount
