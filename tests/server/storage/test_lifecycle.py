"""The rooms' life cycle without sockets: idle rooms are archived and come back intact, caps count
live rooms and archive the least recently used idle one, one client cannot fill the server, a
restart archives everything, long-unused rooms are deleted, and deleted rooms say so."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from server.core.limits import RoomLimits
from server.core.members import JoinRefused
from server.core.room import FrameResult, JobKind
from server.storage.lifecycle import Lifecycle, LiveRoom, least_recently_used
from server.storage.manager import ClientRoomsFull, RoomGone, RoomManager, RoomsFull
from server.storage.store import DB_NAME, Store
from tests.server.conftest import IMAGE, FakeClock, Harness, only

DAY = 86400.0
RULES = Lifecycle(idle_archive_s=300, unjoined_archive_s=60, delete_after_s=30 * DAY, delete_unjoined_s=DAY)
ADD = {"t": "add_pair", "pair": "p1", "handle": [10.5, 20.5], "target": [30.5, 40.5]}


class Env:
    """A manager with a fake wall clock (the life cycle's) over a store in ``path`` (None: memory)."""

    def __init__(
        self, path: Path | None = None, rules: Lifecycle = RULES, max_rooms: int = 100, t: float = 1.7e9
    ):
        self.wall = FakeClock(t)
        self.store = Store(path)
        self.manager = RoomManager(
            self.store, RoomLimits(max_rooms=max_rooms), clock=FakeClock(), lifecycle=rules, wall=self.wall
        )

    def room(self, client: str | None = None) -> Harness:
        return Harness.attach(self.manager, self.manager.create(IMAGE, client=client))

    def restart(self, path: Path, rules: Lifecycle = RULES) -> RoomManager:
        self.store.close()
        m = RoomManager(Store(path), clock=FakeClock(), lifecycle=rules, wall=self.wall)
        m.load()
        return m

    def archived(self, room_id: str) -> bool:
        row = self.store._conn.execute(
            "SELECT archived FROM room_life WHERE room_id=?", (room_id,)
        ).fetchone()
        return row is not None and row[0] is not None


# --- the rules ------------------------------------------------------------------------------------


def test_rules_archive_after_idle_time_and_never_joined_rooms_sooner():
    """A room is due when idle for idle_archive_s (unjoined_archive_s if nobody joined), never
    while someone is in it; the room archived to make space is a never-joined one first, then
    the one idle the longest."""
    assert not LiveRoom(idle_since=None, joined=True).archive_due(1e9, RULES)
    assert not LiveRoom(idle_since=1000.0, joined=True).archive_due(1299.0, RULES)
    assert LiveRoom(idle_since=1000.0, joined=True).archive_due(1300.0, RULES)
    assert LiveRoom(idle_since=1000.0, joined=False).archive_due(1060.0, RULES)
    rooms = [
        ("busy", LiveRoom(idle_since=None, joined=True)),
        ("old", LiveRoom(idle_since=10.0, joined=True)),
        ("new", LiveRoom(idle_since=50.0, joined=True)),
        ("fresh-unjoined", LiveRoom(idle_since=90.0, joined=False)),
    ]
    assert least_recently_used(rooms) == "fresh-unjoined"
    assert least_recently_used(rooms[:3]) == "old"
    assert least_recently_used(rooms[:1]) is None
    assert Lifecycle(delete_after_s=0, delete_unjoined_s=0).delete_cutoffs(1e9) == (
        float("-inf"),
        float("-inf"),
    )
    with pytest.raises(ValueError):
        Lifecycle(idle_archive_s=0)


# --- archiving --------------------------------------------------------------------------------------


def test_an_idle_room_is_archived_and_comes_back_intact(tmp_path: Path):
    """Nobody in a room for idle_archive_s: it is saved, unloaded and marked archived; the next
    join loads it again with its points, history, members' identities and undo stacks."""
    env = Env(tmp_path)
    h = env.room()
    a = h.join(name="Ada", secret="adas-browser-secret-00001").member_id
    h.send(a, ADD)
    h.send(a, {"t": "new_image", "seed": 9})
    before = h.room.to_record()
    env.wall.advance(10_000)
    assert env.manager.sweep() == []  # Ada is still in it
    h.leave(a)
    env.wall.advance(299)
    assert env.manager.sweep() == []
    env.wall.advance(1)
    assert env.manager.sweep() == [h.room_id]
    assert h.room_id not in env.manager.rooms and env.archived(h.room_id)

    again = h.join(name="", secret="adas-browser-secret-00001")
    assert again.member_id == a and h.room_id in env.manager.rooms and not env.archived(h.room_id)
    after = h.room.to_record()
    assert (after.image, after.pairs, after.history_index, after.version) == (
        before.image,
        before.pairs,
        before.history_index,
        before.version,
    )
    assert [e.image for e in after.history] == [e.image for e in before.history]
    assert only(h.send(a, {"t": "undo"}), "op").msg["patch"]["image"]["seed"] == 42  # her undo


def test_a_room_nobody_joined_is_archived_sooner():
    """A room created and never joined goes after unjoined_archive_s (60 s), not 300 s."""
    env = Env()
    h = env.room()
    env.wall.advance(59)
    assert env.manager.sweep() == []
    env.wall.advance(1)
    assert env.manager.sweep() == [h.room_id]
    assert h.join().member_id  # still there, loaded on first use


def test_a_running_room_is_not_archived_until_its_drag_ends():
    """Everyone left while a drag runs: the room stays live until the drag is committed."""
    env = Env()
    h = env.room()
    a = h.join().member_id
    h.send(a, ADD)
    h.send(a, {"t": "start"})
    h.leave(a)
    env.wall.advance(1000)
    assert env.manager.sweep() == []
    job = env.manager.engine_jobs()[0]
    env.manager.on_frame(job, FrameResult(b"j", {"p1": (30.0, 40.0)}, reached=True))
    (job,) = env.manager.engine_jobs()
    assert job.kind is JobKind.FINISH
    env.manager.on_finished(job, env.store.put_latent(b"\x01" * 64))
    assert env.manager.sweep() == [h.room_id]


def test_a_download_keeps_a_room_live_for_another_idle_period():
    """touch() (an HTTP download) restarts the idle time of a room nobody is in."""
    env = Env()
    h = env.room()
    h.leave(h.join().member_id)
    env.wall.advance(200)
    env.manager.touch(h.room_id)
    env.wall.advance(200)
    assert env.manager.sweep() == []
    env.wall.advance(100)
    assert env.manager.sweep() == [h.room_id]


def test_a_room_that_cannot_be_saved_stays_loaded(tmp_path: Path):
    """Archiving saves first; when the store fails the room stays live (nothing is lost)."""
    env = Env(tmp_path)
    h = env.room()
    a = h.join().member_id
    h.send(a, ADD)
    h.leave(a)
    env.store._conn.execute("PRAGMA query_only=ON")
    h.room.dirty = True
    env.wall.advance(1000)
    assert env.manager.sweep() == [] and h.room_id in env.manager.rooms
    env.store._conn.execute("PRAGMA query_only=OFF")
    assert env.manager.sweep() == [h.room_id]


# --- caps -----------------------------------------------------------------------------------------


def test_at_the_cap_the_least_recently_used_idle_room_is_archived():
    """Caps count live rooms: at max_rooms, creating (or reopening) archives the idle room unused
    the longest; only when someone is in every room is the newcomer refused."""
    env = Env(max_rooms=3)
    rooms = [env.room() for _ in range(3)]
    members = [h.join().member_id for h in rooms]
    for i in (1, 0, 2):  # room 1 is left first: the least recently used
        rooms[i].leave(members[i])
        env.wall.advance(10)
    env.room()
    assert rooms[1].room_id not in env.manager.rooms and len(env.manager.rooms) == 3
    assert rooms[0].room_id in env.manager.rooms and rooms[2].room_id in env.manager.rooms

    rooms[1].join()  # reopening it archives the next idle one: room 3 (never joined) first
    assert len(env.manager.rooms) == 3 and rooms[1].room_id in env.manager.rooms
    assert rooms[0].room_id in env.manager.rooms and rooms[2].room_id in env.manager.rooms
    for h in (rooms[0], rooms[2]):
        h.join()
    with pytest.raises(RoomsFull):
        env.manager.create(IMAGE)


def test_a_reopen_at_a_full_server_is_refused_with_server_full():
    """An archived room cannot load while every live room is in use: close server_full (retry)."""
    env = Env(max_rooms=1)
    first = env.room()
    first.leave(first.join().member_id)
    env.wall.advance(1000)
    env.manager.sweep()
    second = env.room()
    second.join()
    with pytest.raises(JoinRefused, match="server_full"):
        first.join()
    with pytest.raises(RoomsFull):
        env.manager.open(first.room_id)


def test_one_client_cannot_fill_the_server():
    """Past max_rooms_per_client live rooms, a client's new room archives its own oldest idle
    one (never someone else's); with all its rooms in use it is refused (429), while another
    client still creates rooms."""
    env = Env(rules=Lifecycle(max_rooms_per_client=3), max_rooms=10)
    other = env.room("10.0.0.2")
    other.join()
    mine = [env.room("10.0.0.1") for _ in range(3)]
    for _ in range(50):
        env.wall.advance(1)
        env.room("10.0.0.1")
    live_mine = [rid for rid, life in env.manager.life.items() if life.creator == "10.0.0.1"]
    assert len(live_mine) == 3 and len(env.manager.rooms) == 4
    assert other.room_id in env.manager.rooms
    assert all(h.room_id not in env.manager.rooms for h in mine)
    assert mine[0].join().member_id  # archived, not lost
    in_use = [env.room("10.0.0.3") for _ in range(3)]
    for h in in_use:
        h.join()
    with pytest.raises(ClientRoomsFull):
        env.manager.create(IMAGE, client="10.0.0.3")
    assert env.room("10.0.0.4").room_id in env.manager.rooms


# --- restart --------------------------------------------------------------------------------------


def test_a_restart_archives_every_room_and_never_refuses(tmp_path: Path):
    """After a restart no room is loaded (so a full store never makes the server full), every room
    opens on first use with its state, and new rooms can be created at once."""
    env = Env(tmp_path, max_rooms=2)
    rooms = [env.room() for _ in range(2)]
    a = rooms[0].join().member_id
    rooms[0].send(a, ADD)
    m = env.restart(tmp_path)
    assert m.rooms == {} and m.store.count_rooms() == 2
    m.limits = RoomLimits(max_rooms=2)
    m.create(IMAGE)
    m.create(IMAGE)
    assert len(m.rooms) == 2
    back = Harness.attach(m, rooms[0].created)
    back.join()  # archives an idle new room to make space
    assert back.room.pairs["p1"].handle == (10.5, 20.5)
    db = sqlite3.connect(tmp_path / DB_NAME)
    assert db.execute("SELECT count(*) FROM room_life WHERE archived IS NULL").fetchone()[0] == 2


def test_a_wrong_capability_does_not_load_an_archived_room(tmp_path: Path):
    """Capabilities are checked against the stored hashes: a bad one loads nothing."""
    env = Env(tmp_path)
    h = env.room()
    m = env.restart(tmp_path)
    hm = Harness.attach(m, h.created)
    with pytest.raises(JoinRefused, match="bad_capability"):
        m.join(h.room_id, {**hm.hello(), "cap": "not-the-capability-of-this-room"})
    assert m.rooms == {}
    assert m.role(h.room_id, h.created.view_token) == "viewer" and m.rooms == {}
    with pytest.raises(JoinRefused, match="room_not_found"):
        m.join("no-such-room", hm.hello())


# --- deletion -------------------------------------------------------------------------------------


def test_an_editor_deletes_a_room_and_its_links_then_say_deleted(tmp_path: Path):
    """delete() removes the room and its history from memory and the store; a hello then gets
    room_closed (not room_not_found), as does a restart."""
    env = Env(tmp_path)
    h = env.room()
    a = h.join().member_id
    h.send(a, ADD)
    room = env.manager.delete(h.room_id)
    assert room is not None and room.members  # the app closes their connections
    assert h.room_id not in env.manager.rooms and env.store.load_room(h.room_id) is None
    db = sqlite3.connect(tmp_path / DB_NAME)
    assert db.execute("SELECT count(*) FROM history WHERE room_id=?", (h.room_id,)).fetchone() == (0,)
    with pytest.raises(JoinRefused, match="room_closed"):
        h.join()
    with pytest.raises(RoomGone) as gone:
        env.manager.open(h.room_id)
    assert gone.value.deleted
    m = env.restart(tmp_path)
    with pytest.raises(JoinRefused, match="room_closed"):
        Harness.attach(m, h.created).join()


def test_rooms_unused_for_long_are_deleted_with_their_history(tmp_path: Path):
    """expire(): archived rooms unused for delete_after_s (30 days) go with their history and
    latents, rooms nobody ever joined after delete_unjoined_s (1 day); live rooms and recently
    used ones stay."""
    env = Env(tmp_path)
    old, unjoined, recent, live = env.room(), env.room(), env.room(), env.room()
    a = old.join().member_id
    old.send(a, ADD)
    key = env.store.put_latent(b"\x07" * 64)
    old.send(a, {"t": "start"})
    job = env.manager.engine_jobs()[0]
    env.manager.on_frame(job, FrameResult(b"j", {"p1": (30.0, 40.0)}, reached=True))
    env.manager.on_finished(env.manager.engine_jobs()[0], key)
    old.leave(a)
    live.join()
    recent.leave(recent.join().member_id)
    env.wall.advance(DAY - 1)
    assert env.manager.expire() == []
    env.wall.advance(2)
    env.manager.sweep()  # archives old and unjoined; live stays, its use noted
    assert env.manager.expire() == [unjoined.room_id]
    env.wall.advance(29 * DAY - 10)
    recent.leave(recent.join().member_id)  # opened again: used now
    env.wall.advance(20)
    env.store._conn.execute("UPDATE latents SET created = created - 7200")  # old enough to collect
    assert env.manager.expire() == [old.room_id]
    assert env.store.get_latent(key) is None
    assert set(env.manager.rooms) == {live.room_id, recent.room_id}
    assert env.store.count_rooms() == 2
    with pytest.raises(JoinRefused, match="room_closed"):
        old.join()
    assert recent.join().member_id


def test_a_long_session_survives_a_restart_after_30_days(tmp_path: Path):
    """The sweep notes the use of rooms someone is in, so a room in use for more than
    delete_after_s is not deleted by the next start-up's deletion pass."""
    env = Env(tmp_path)
    h = env.room()
    h.join()
    for _ in range(31):
        env.wall.advance(DAY)
        env.manager.sweep()
    m = env.restart(tmp_path)
    assert m.store.count_rooms() == 1
    assert Harness.attach(m, h.created).join().member_id


def test_deletion_can_be_turned_off():
    """delete_after_s = delete_unjoined_s = 0: nothing is ever deleted."""
    env = Env(rules=Lifecycle(delete_after_s=0, delete_unjoined_s=0))
    h = env.room()
    env.wall.advance(1000 * DAY)
    env.manager.sweep()
    assert env.manager.expire() == [] and h.join().member_id
