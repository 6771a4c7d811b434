"""SQLite persistence: restart restores rooms, tokens are hashed, latents, disk-full handling."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from server.core.ids import hash_token
from server.core.room import FrameResult, JobKind
from server.core.state import Status
from server.storage.manager import RoomManager
from server.storage.store import DB_NAME, Store, StoreError
from tests.server.conftest import FakeClock, Harness, error_code, only

ADD = {"t": "add_pair", "pair": "p1", "handle": [10.5, 20.5], "target": [30.5, 40.5]}


def drag(h: Harness, a: str, latent: str) -> None:
    h.send(a, {"t": "start"})
    job = h.manager.engine_jobs()[0]
    h.manager.on_frame(job, FrameResult(b"j", {"p1": (28.0, 38.0)}, reached=True))
    (job,) = h.manager.engine_jobs()
    assert job.kind is JobKind.FINISH
    h.manager.on_finished(job, latent)


def restart(tmp_path: Path) -> RoomManager:
    m = RoomManager(Store(tmp_path), clock=FakeClock())
    m.load()
    return m


SECRET = "s3cr3t-of-adas-browser-0001"


def test_restart_restores_rooms_points_params_mask_history(tmp_path: Path):
    """A new Store and RoomManager on the same directory restore every committed edit:
    image, points, mask, params, history with its index, version and member counter, and each
    editor's own undo and redo stacks."""
    h = Harness(store=Store(tmp_path))
    a = h.join(secret=SECRET).member_id
    h.send(a, ADD)
    key = h.manager.store.put_latent(b"\x01\x02" * 1000)
    drag(h, a, key)
    h.send(a, {"t": "move_point", "pair": "p1", "which": "target", "pos": [60.5, 70.5]})
    h.send(a, {"t": "set_params", "params": {"lr": 0.01, "mode": "predict", "r2": 7}})
    h.send(a, {"t": "paint_mask", "mode": "flexible", "radius": 12, "points": [[100, 100], [120, 110]]})
    h.send(a, {"t": "new_image", "seed": 9})
    h.send(a, {"t": "add_pair", "pair": "q", "handle": [1, 2], "target": [3, 4]})
    h.send(a, {"t": "undo"})  # Ada's newest action: the pair q goes
    h.send(a, {"t": "undo"})  # then her new image: back to the dragged image with p1 and the mask
    before = h.room.to_record()
    h.manager.store.close()

    m = restart(tmp_path)
    room = m.open(h.room_id)
    after = room.to_record()
    assert after.image == before.image and after.image.latent == key
    assert [(p.id, p.handle, p.target, p.owner) for p in after.pairs] == [
        (p.id, p.handle, p.target, p.owner) for p in before.pairs
    ]
    assert after.mask == before.mask and not after.mask.is_empty
    assert after.params == before.params and after.params.mode == "predict"
    assert after.history_index == before.history_index == 1
    assert [(e.kind, e.image) for e in after.history] == [(e.kind, e.image) for e in before.history]
    assert [p.id for p in after.history[2].before.pairs] == ["p1"]  # undo/redo layouts survive
    assert (after.version, after.next_member, after.drag) == (before.version, before.next_member, before.drag)
    assert m.store.get_latent(key) == b"\x01\x02" * 1000
    assert [e.id for e in after.history] == [e.id for e in before.history]
    # Ada's stacks survive: her redo goes to the new image, her undos back to the seed image
    assert room.status is Status.IDLE and room.render_pending
    hm = Harness.attach(m, h.created)
    b = hm.join(name="Grace").member_id
    assert b != a  # member ids are not reused after a restart
    assert error_code(hm.send(b, {"t": "redo"})) == "nothing_to_redo"  # nothing of Grace's
    assert hm.join(secret=SECRET).member_id == a
    state = room.undo.state_message(a)
    assert (state["undo"], state["redo"], state["redo_kind"]) == (5, 2, "new_image")
    assert only(hm.send(a, {"t": "redo"}), "op").msg["patch"]["image"]["seed"] == 9
    hm.send(a, {"t": "undo"})
    for _ in range(3):  # the mask stroke, the parameters, the target move
        assert "image" not in only(hm.send(a, {"t": "undo"}), "op").msg["patch"]
    assert only(hm.send(a, {"t": "undo"}), "op").msg["patch"]["image"]["latent"] is None  # the drag


def test_running_drag_is_idle_after_restart(tmp_path: Path):
    """A drag running at shutdown comes back idle, with its last committed image."""
    h = Harness(store=Store(tmp_path))
    a = h.join().member_id
    h.send(a, ADD)
    h.send(a, {"t": "start"})
    m = restart(tmp_path)
    room = m.open(h.room_id)
    assert (
        room.status is Status.IDLE and room.image.latent is None and room.pairs["p1"].handle == (10.5, 20.5)
    )
    assert m.engine_jobs()[0].kind is JobKind.RENDER


def test_tokens_are_stored_only_as_hashes(tmp_path: Path):
    """The database holds sha256 hashes of the capabilities, never the tokens, and the links
    still work after a restart."""
    h = Harness(store=Store(tmp_path))
    h.manager.store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert h.created.edit_token.encode() not in raw and h.created.view_token.encode() not in raw
    db = sqlite3.connect(tmp_path / DB_NAME)
    assert db.execute("SELECT edit_hash, view_hash FROM rooms").fetchone() == (
        hash_token(h.created.edit_token),
        hash_token(h.created.view_token),
    )
    m = restart(tmp_path)
    hm = Harness.attach(m, h.created)
    assert only(hm.join("viewer").messages, "welcome").msg["role"] == "viewer"


def test_wal_mode(tmp_path: Path):
    """The database runs in WAL mode."""
    s = Store(tmp_path)
    assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_latents_are_content_addressed_and_collected(tmp_path: Path):
    """put_latent is idempotent; gc drops only latents no history entry refers to."""
    h = Harness(store=Store(tmp_path))
    a = h.join().member_id
    store = h.manager.store
    kept = store.put_latent(b"kept")
    assert store.put_latent(b"kept") == kept and len(kept) == 64
    orphan = store.put_latent(b"orphan")
    h.send(a, ADD)
    drag(h, a, kept)
    assert store.gc_latents(older_than_s=3600) == 0  # young orphans survive (worker may commit them)
    assert store.gc_latents(older_than_s=-1) == 1
    assert store.get_latent(orphan) is None and store.get_latent(kept) == b"kept"


def test_disk_full_keeps_memory_state_and_reports_once(tmp_path: Path):
    """When SQLite cannot write (disk full), edits still apply in memory, members get one
    storage_failed error, and the next commit after space returns saves everything."""
    store = Store(tmp_path)
    h = Harness(store=store)
    a = h.join().member_id
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count={pages}")  # the file may not grow: SQLITE_FULL
    big = [
        {"t": "add_pair", "pair": f"p{i}", "handle": [i + 0.5, 1.5], "target": [i + 0.5, 2.5]}
        for i in range(60)
    ]
    errors = []
    for msg in big:
        out = h.send(a, msg)
        assert only(out, "op")  # applied in memory regardless
        errors += [o for o in out if o.msg["t"] == "error"]
    assert len(errors) == 1 and errors[0].msg["code"] == "storage_failed" and errors[0].to == "all"
    assert len(h.room.pairs) == 60 and h.room.dirty
    with pytest.raises(StoreError, match="full"):
        store.save_room(h.room.to_record())
    store._conn.execute("PRAGMA max_page_count=1073741823")
    h.send(a, {"t": "clear_mask"})
    assert not h.room.dirty
    store.close()
    m = restart(tmp_path)
    assert len(m.open(h.room_id).pairs) == 60


def test_unopenable_store_raises_store_error(tmp_path: Path):
    """A data directory that cannot be created gives a StoreError that names the path."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot open"):
        Store(blocker / "sub")


def test_failed_create_leaves_no_room(tmp_path: Path):
    """If the new room cannot be saved, create raises StoreError and no room exists."""
    store = Store(tmp_path)
    m = RoomManager(store)
    store.close()
    with pytest.raises(StoreError):
        m.create(Harness().room.image)
    assert m.rooms == {}


def test_store_error_on_join_is_reported(tmp_path: Path):
    """A join whose member counter cannot be saved still joins, with a storage_failed error."""
    store = Store(tmp_path)
    h = Harness(store=store)
    store._conn.execute("PRAGMA query_only=ON")
    j = h.join()
    assert error_code(j.messages) == "storage_failed"
    store._conn.execute("PRAGMA query_only=OFF")
