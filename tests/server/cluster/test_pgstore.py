"""The PostgreSQL store passes the SQLite store's own tests (restart, history, undo, identities,
crash recovery, life cycle) against a real server, and fences rooms between nodes."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from server.cluster.pgstore import FencedOut, PgConfig, PgStore
from server.storage.manager import RoomManager
from server.storage.store import StoreError
from tests.server.conftest import IMAGE, FakeClock, Harness, error_code
from tests.server.storage import test_lifecycle, test_restart, test_store

ADD = {"t": "add_pair", "pair": "p1", "handle": [10.5, 20.5], "target": [30.5, 40.5]}

# the SQLite store's tests that say nothing of SQLite itself (files, pragmas), by module
SHARED_TESTS: list[tuple[ModuleType, str]] = [
    (test_store, "test_restart_restores_rooms_points_params_mask_history"),
    (test_store, "test_running_drag_is_idle_after_restart"),
    (test_store, "test_latents_are_content_addressed_and_collected"),
    (test_store, "test_failed_create_leaves_no_room"),
    (test_restart, "test_a_crash_during_a_drag_keeps_its_last_checkpoint"),
    (test_restart, "test_an_orderly_end_leaves_no_report"),
    (test_restart, "test_a_crash_during_a_projection_commits_nothing_and_reports"),
    (test_lifecycle, "test_an_idle_room_is_archived_and_comes_back_intact"),
    (test_lifecycle, "test_a_wrong_capability_does_not_load_an_archived_room"),
    (test_lifecycle, "test_a_long_session_survives_a_restart_after_30_days"),
]


@pytest.mark.parametrize(("module", "name"), SHARED_TESTS, ids=[n for _, n in SHARED_TESTS])
def test_sqlite_store_test_on_postgres(
    module: ModuleType, name: str, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Each of these SQLite store tests passes with every ``Store(...)`` it makes replaced by a
    PostgreSQL store on one database (a new store on the same database: a restart)."""
    opened: list[PgStore] = []

    def store(_path: Any = None) -> PgStore:
        s = PgStore(pg_url)
        opened.append(s)
        return s

    monkeypatch.setattr(module, "Store", store)
    if hasattr(module, "Env"):  # test_lifecycle's Env asks whether a room is archived through sqlite
        monkeypatch.setattr(module.Env, "archived", lambda self, rid: _archived(pg_url, rid))
    try:
        getattr(module, name)(tmp_path)
    finally:
        for s in opened:
            s.close()


def _archived(url: str, room_id: str) -> bool:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT archived FROM room_life WHERE room_id=%s", (room_id,)).fetchone()
    return row is not None and row[0] is not None


def test_schema_is_versioned_and_a_newer_one_is_refused(pg_url: str):
    """The schema version is stored; opening twice keeps it; a database from a newer server is refused."""
    import psycopg

    PgStore(pg_url).close()
    PgStore(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == ("1",)
        conn.execute("UPDATE meta SET value='99' WHERE key='schema'")
    with pytest.raises(StoreError, match="schema version 99"):
        PgStore(pg_url)


def test_tokens_are_stored_only_as_hashes(pg_url: str):
    """The database holds sha256 hashes of the capabilities, never the tokens."""
    import psycopg

    from server.core.ids import hash_token

    h = Harness(store=PgStore(pg_url))
    h.manager.store.close()
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT edit_hash, view_hash FROM rooms").fetchone()
        dump = str(conn.execute("SELECT * FROM rooms").fetchall())
    assert row == (hash_token(h.created.edit_token), hash_token(h.created.view_token))
    assert h.created.edit_token not in dump and h.created.view_token not in dump


def test_a_stale_epoch_writes_nothing(pg_url: str):
    """Two nodes believe they own a room: only the one holding the newest epoch commits; the
    other gets FencedOut, its members one storage_failed, and the database keeps the new owner's state."""
    a = PgStore(pg_url, fenced=True)
    h = Harness(store=a)
    assert a.take_fence(h.room_id) == 1
    m = h.join().member_id
    h.send(m, ADD)  # node A commits under epoch 1
    b = PgStore(pg_url, fenced=True)
    assert b.take_fence(h.room_id) == 2  # node B takes the room over
    hb = Harness.attach(RoomManager(b, clock=FakeClock()), h.created)
    mb = hb.join().member_id
    hb.send(mb, {"t": "move_point", "pair": "p1", "which": "target", "pos": [50.5, 50.5]})
    out = h.send(m, {"t": "move_point", "pair": "p1", "which": "target", "pos": [1.5, 1.5]})
    assert error_code(out) == "storage_failed" and h.room.dirty  # A may not write any more
    assert h.room_id in a.fenced_out
    with pytest.raises(FencedOut):
        a.save_room(h.room.to_record())
    with closing(PgStore(pg_url)) as c:
        again = c.load_room(h.room_id)
    assert again is not None and again.pairs[0].target == (50.5, 50.5)
    a.close()
    b.close()


def test_a_database_outage_fails_clearly_and_the_next_commit_saves_everything(fresh_postgres):
    """While PostgreSQL is down every write raises StoreError at once ("database unavailable"),
    edits stay in memory, members hear storage_failed once; once it is back the next commit
    saves them all, and nothing was half-written."""
    store = PgStore(PgConfig(fresh_postgres.url, connect_timeout_s=1.0, retry_s=0.2))
    h = Harness(store=store)
    a = h.join().member_id
    h.send(a, ADD)
    fresh_postgres.stop()
    errors = []
    for i in range(5):
        pair = {"t": "add_pair", "pair": f"q{i}", "handle": [i + 0.5, 1.5], "target": [i + 0.5, 2.5]}
        out = h.send(a, pair)
        errors += [o for o in out if o.msg["t"] == "error"]
    assert [e.msg["code"] for e in errors] == ["storage_failed"] and h.room.dirty
    with pytest.raises(StoreError, match="unavailable"):
        store.save_room(h.room.to_record())
    fresh_postgres.start()
    import time

    time.sleep(0.3)  # past retry_s
    h.send(a, {"t": "clear_mask"})
    assert not h.room.dirty
    store.close()
    with closing(PgStore(fresh_postgres.url)) as c:
        rec = c.load_room(h.room_id)
    assert rec is not None and sorted(p.id for p in rec.pairs) == ["p1", "q0", "q1", "q2", "q3", "q4"]


def test_room_model_without_loading(pg_url: str):
    """room_model names the room's model from its row (None for an unknown room)."""
    store = PgStore(pg_url)
    c = RoomManager(store).create(IMAGE)
    assert store.room_model(c.room_id) == IMAGE.model and store.room_model("nope") is None
    store.close()


def test_deleting_and_expiring_rooms_removes_their_rows(pg_url: str):
    """A deleted room leaves no history, fence or life rows and its links say deleted (also to a
    new node); a room unused past the cut-off is expired, and unreferenced latents are collected."""
    import psycopg

    from server.core.members import JoinRefused

    store = PgStore(pg_url, fenced=True)
    h = Harness(store=store)
    store.take_fence(h.room_id)
    a = h.join().member_id
    h.send(a, ADD)
    h.manager.delete(h.room_id)
    with psycopg.connect(pg_url) as conn:
        for table in ("history", "room_life", "room_fence"):
            n = conn.execute(f"SELECT count(*) FROM {table} WHERE room_id=%s", (h.room_id,)).fetchone()
            assert n == (0,), table
    other = PgStore(pg_url, fenced=True)
    with pytest.raises(JoinRefused, match="room_closed"):
        Harness.attach(RoomManager(other, clock=FakeClock()), h.created).join()
    old = RoomManager(store).create(IMAGE)
    orphan = store.put_latent(b"orphan")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE latents SET created = created - 7200")
    assert store.expire_rooms(unused_before=float("inf"), unjoined_before=0.0, keep=set()) == [old.room_id]
    assert store.gc_latents() == 1 and store.get_latent(orphan) is None
    assert store.deleted(old.room_id) and store.count_rooms() == 0
    store.close()
    other.close()


def test_rooms_life_says_which_rooms_were_joined_and_when_used(pg_url: str):
    """rooms_life: (joined, last used) of the stored rooms asked for (what the cluster archives
    first to make space for a client's new room); unknown ids are left out."""
    store = PgStore(pg_url)
    manager = RoomManager(store, wall=lambda: 1000.0)
    fresh, joined = manager.create(IMAGE, live=False), manager.create(IMAGE, live=False)
    store.touch_rooms(2000.0, [joined.room_id], joined=True)
    life = store.rooms_life([fresh.room_id, joined.room_id, "nope"])
    assert life == {fresh.room_id: (0, 1000.0), joined.room_id: (1, 2000.0)}
    assert store.rooms_life([]) == {}
    store.close()
