"""After a restart: editors keep their identity, a drag cut short by a crash is reported as
interrupted with its last checkpoint committed, and reset still knows the original image."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from server.core.room import FrameResult, JobKind
from server.core.state import Status
from server.storage.manager import RoomManager
from server.storage.store import DB_NAME, Store
from tests.server.conftest import IMAGE, FakeClock, Harness, only

SECRET = "ada-browser-secret-0123456789"
ADD = {"t": "add_pair", "pair": "p1", "handle": [10.5, 20.5], "target": [30.5, 40.5]}


def restart(tmp_path: Path) -> RoomManager:
    m = RoomManager(Store(tmp_path), clock=FakeClock())
    m.load()
    return m


def crash(h: Harness) -> None:
    """The process dies: nothing more is saved (the store's file stays as it is)."""
    h.manager.store.close()


def test_identity_survives_a_restart(tmp_path: Path):
    """The browser with the secret is the same member after a restart (m1 stays m1, not m2), with
    its name and colour, and still owns its pair; the database holds no secret."""
    h = Harness(store=Store(tmp_path))
    a = h.join(name="Ada", client_id="page-one-0001", secret=SECRET)
    h.join(name="Grace")
    h.send(a.member_id, ADD)
    colour = h.room.members[a.member_id].colour
    crash(h)
    raw = (tmp_path / DB_NAME).read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("*-wal"))
    assert SECRET.encode() not in raw

    m = restart(tmp_path)
    hm = Harness.attach(m, h.created)
    again = hm.join(name="", client_id="page-two-0002", secret=SECRET)
    welcome = only(again.messages, "welcome").msg
    assert (welcome["you"], welcome["name"], welcome["colour"]) == (a.member_id, "Ada", colour)
    assert hm.room.pairs["p1"].owner == again.member_id
    newcomer = hm.join(name="Grace")
    assert newcomer.member_id not in (a.member_id,)  # ids are never reused


def start_with_checkpoints(h: Harness, a: str, steps: int, checkpoint_at: set[int]) -> None:
    h.send(a, ADD)
    h.send(a, {"t": "start"})
    for i in range(steps):
        (job,) = h.manager.engine_jobs()
        assert job.kind is JobKind.STEP
        key = h.manager.store.put_latent(bytes([i + 1]) * 64) if i + 1 in checkpoint_at else None
        h.manager.on_frame(job, FrameResult(b"j", {"p1": (11.5 + i, 21.5 + i)}, checkpoint=key))


def test_a_crash_during_a_drag_keeps_its_last_checkpoint(tmp_path: Path):
    """A drag that had stored checkpoints at steps 3 and 6 and ran on to step 8 when the server died
    comes back idle with step 6's latent committed (undo returns to the start image), the handle
    where it was at step 6, and ``interrupted`` saying so in the snapshot."""
    h = Harness(store=Store(tmp_path))
    a = h.join(name="Ada", secret=SECRET).member_id
    start_with_checkpoints(h, a, 8, {3, 6})
    latent6 = h.room._checkpoint[1]
    crash(h)

    m = restart(tmp_path)
    room = m.open(h.room_id)
    assert room.status is Status.IDLE and room.image.latent == latent6
    assert room.history.to_wire() == {"index": 1, "size": 2} and room.history.current.kind == "drag"
    assert room.pairs["p1"].handle == (16.5, 26.5)  # tracked at step 6
    assert room.interrupted == {"kind": "drag", "drag": 1, "step": 6, "by": a}
    hm = Harness.attach(m, h.created)
    j = hm.join(name="Ada", secret=SECRET)
    state = only(j.messages, "snapshot").msg["state"]
    assert state["interrupted"] == room.interrupted and state["status"] == "idle" and state["step"] == 6
    undo = only(hm.send(j.member_id, {"t": "undo"}), "op").msg["patch"]
    assert undo["image"]["latent"] is None and undo["pairs"][0]["handle"] == [10.5, 20.5]
    # the report described the image the undo took away: it goes with it (else: at the next start)
    assert undo["interrupted"] is None and hm.room.interrupted is None
    hm.send(j.member_id, {"t": "redo"})
    op = only(hm.send(j.member_id, {"t": "start"}), "op").msg
    assert "interrupted" not in op["patch"]
    hm.send(j.member_id, {"t": "stop"})
    (job,) = hm.manager.engine_jobs()
    hm.manager.on_finished(job, None)
    hm.manager.store.close()
    assert restart(tmp_path).open(h.room_id).interrupted is None  # saved: not reported again


def test_a_crash_before_any_checkpoint_keeps_the_image_and_reports(tmp_path: Path):
    """Without a checkpoint nothing is committed: the start image, the handles where they were at
    the start, interrupted.step 0; the report is saved, so a second restart is quiet."""
    h = Harness(store=Store(tmp_path))
    a = h.join().member_id
    start_with_checkpoints(h, a, 1, set())
    h.send(a, {"t": "move_point", "pair": "p1", "which": "target", "pos": [50.5, 60.5]})  # saved mid-drag
    crash(h)
    m = restart(tmp_path)
    room = m.open(h.room_id)
    assert room.image == IMAGE and room.history.to_wire() == {"index": 0, "size": 1}
    assert room.pairs["p1"].handle == (10.5, 20.5) and room.pairs["p1"].target == (50.5, 60.5)
    assert room.interrupted == {"kind": "drag", "drag": 1, "step": 0, "by": a}
    assert m.engine_jobs()[0].kind is JobKind.RENDER
    m.store.close()
    assert restart(tmp_path).open(h.room_id).interrupted is None
    db = sqlite3.connect(tmp_path / DB_NAME)
    assert db.execute("SELECT COUNT(*) FROM room_runs").fetchone() == (0,)


def test_an_orderly_end_leaves_no_report(tmp_path: Path):
    """A drag that ended (here: stopped and committed) is not reported after a restart."""
    h = Harness(store=Store(tmp_path))
    a = h.join().member_id
    start_with_checkpoints(h, a, 4, {2})
    h.send(a, {"t": "stop"})
    (job,) = h.manager.engine_jobs()
    h.manager.on_finished(job, h.manager.store.put_latent(b"final" * 20))
    h.manager.store.close()
    room = restart(tmp_path).open(h.room_id)
    assert room.interrupted is None and room.history.to_wire() == {"index": 1, "size": 2}


def test_a_crash_during_a_projection_commits_nothing_and_reports(tmp_path: Path):
    """A blend running at a crash: the room is idle on its image, interrupted kind blend, step 0."""
    h = Harness(store=Store(tmp_path))
    a = h.join().member_id
    h.send(a, {"t": "paint_mask", "mode": "flexible", "radius": 30, "points": [[100, 100]]})
    h.send(a, {"t": "blend", "source": "seed", "seed": 5})
    crash(h)
    room = restart(tmp_path).open(h.room_id)
    assert room.status is Status.IDLE and room.task is None and room.image == IMAGE
    assert room.interrupted == {"kind": "blend", "drag": 1, "step": 0, "by": a}


def test_checkpoint_latents_survive_collection_until_committed(tmp_path: Path):
    """A checkpoint referenced only by a run (not yet by history) is not collected as garbage."""
    h = Harness(store=Store(tmp_path))
    a = h.join().member_id
    start_with_checkpoints(h, a, 3, {2})
    key = h.room._checkpoint[1]
    h.manager.store._conn.execute("UPDATE latents SET created = 0")
    h.manager.store._conn.commit()
    assert h.manager.store.gc_latents() == 0
    assert h.manager.store.get_latent(key) is not None


def test_reset_after_a_restart_and_for_older_stores(tmp_path: Path):
    """The original image is stored with the room; a room saved without it (an older store) uses its
    first history entry."""
    h = Harness(store=Store(tmp_path))
    a = h.join().member_id
    h.send(a, {"t": "new_image", "seed": 9})
    h.manager.store._conn.execute("DELETE FROM room_origins")
    h.manager.store._conn.commit()
    h.manager.store.close()
    m = restart(tmp_path)
    assert m.open(h.room_id).original == IMAGE
    hm = Harness.attach(m, h.created)
    b = hm.join().member_id
    patch = only(hm.send(b, {"t": "reset"}), "op").msg["patch"]
    assert patch["image"]["seed"] == IMAGE.seed and patch["history"]["size"] == 3
