"""The rooms' life cycle over HTTP and websockets: one client's flood never locks others out, a
restart never answers 503, idle rooms are archived and reopen intact, the caps archive rather than
refuse, and an editor (never a viewer) deletes a room, closing its connections with 4014."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from server.core.protocol import encode
from server.edge.app import create_app
from server.edge.appstate import client_key
from server.edge.config import Settings, parse_duration
from server.storage.lifecycle import Lifecycle
from tests.server.live import TestClient, close_code, hello, make_settings, recv_msg, recv_until


class ClientFrom:
    """ASGI wrapper: the request's client address is its ``x-test-client`` header (tests play
    several clients through one test client)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            for k, v in scope.get("headers", []):
                if k == b"x-test-client":
                    scope = {**scope, "client": (v.decode(), 40000)}
        await self.app(scope, receive, send)


@pytest.fixture
def make_client(tmp_path: Path):
    clients: list[TestClient] = []

    def make(**kw) -> TestClient:
        c = TestClient(ClientFrom(create_app(make_settings(tmp_path, **kw))))
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def create(c: TestClient, ip: str = "10.0.0.1", **body):
    return c.post("/api/rooms", json=body, headers={"x-test-client": ip})


@contextlib.contextmanager
def join(c: TestClient, room: dict, role: str = "editor", name: str = "Ada"):
    with c.websocket_connect(f"/ws/{room['room']}") as ws:
        ws.send_bytes(hello(room["edit_token" if role == "editor" else "view_token"], name))
        assert recv_msg(ws)["t"] == "welcome"
        snapshot = recv_msg(ws)
        assert snapshot["t"] == "snapshot"
        ws.snapshot = snapshot  # type: ignore[attr-defined]
        yield ws


def health(c: TestClient) -> dict:
    return c.get("/healthz").json()


def wait_for(pred, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_hundred_anonymous_creations_do_not_lock_out_another_client(make_client):
    """100 POSTs from one address: the first 60 (the bucket's burst) succeed, the rest get 429 with
    Retry-After; that address holds at most max_rooms_per_client live rooms (its older idle ones
    archived, still openable); another address creates a room at once."""
    c = make_client()
    codes = [create(c).status_code for _ in range(100)]
    assert codes == [201] * 60 + [429] * 40
    r = create(c)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "try again" in r.json()["error"]
    h = health(c)
    assert h["rooms"] == 20 and h["rooms_stored"] == 60
    other = create(c, "10.0.0.2")
    assert other.status_code == 201
    assert health(c)["rooms"] == 21


def test_a_client_whose_rooms_are_all_in_use_gets_429_and_others_go_on(make_client):
    """At max_rooms_per_client live rooms with someone in each, the client's next room is refused
    with 429 and Retry-After; another client is not affected."""
    c = make_client(max_rooms_per_client=2)
    rooms = [create(c).json() for _ in range(2)]
    with join(c, rooms[0]), join(c, rooms[1]):
        r = create(c)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert create(c, "10.0.0.2").status_code == 201
    assert create(c).status_code == 201  # nobody in them now: the oldest is archived


def test_at_the_rooms_cap_an_idle_room_is_archived_and_a_busy_server_answers_503(make_client):
    """max_rooms counts live rooms: a new room archives the least recently used idle one; with
    someone in every live room the answer is 503 with Retry-After."""
    c = make_client(max_rooms=2)
    first, second = create(c).json(), create(c).json()
    with join(c, first) as ws:
        ws.send_bytes(encode({"t": "add_pair", "pair": "p1", "handle": [4.0, 4.0], "target": [9.0, 9.0]}))
        recv_until(ws, lambda m: m["t"] == "op")
        with join(c, second):
            r = create(c, "10.0.0.3")
            assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
    assert create(c, "10.0.0.3").status_code == 201  # archives the first room (least recently used)
    assert health(c)["rooms"] == 2
    with join(c, first) as ws:  # it reopens (archiving another idle room), its pair intact
        assert [p["id"] for p in ws.snapshot["state"]["pairs"]] == ["p1"]


def test_a_restart_keeps_every_room_and_never_answers_503(make_client):
    """The rooms of the last run come back archived: nothing counts against max_rooms, new rooms
    are created at once, and an old room's links open it with its history."""
    c = make_client(max_rooms=2)
    rooms = [create(c).json() for _ in range(2)]
    with join(c, rooms[0]) as ws:
        ws.send_bytes(encode({"t": "new_image", "seed": 77}))
        recv_until(ws, lambda m: m["t"] == "op")
    c.__exit__(None, None, None)
    c2 = make_client(max_rooms=2)  # the same data dir
    h = health(c2)
    assert h["rooms"] == 0 and h["rooms_stored"] == 2
    assert [create(c2).status_code for _ in range(3)] == [201, 201, 201]
    with join(c2, rooms[0]) as ws:
        assert ws.snapshot["state"]["image"]["seed"] == 77
        assert ws.snapshot["state"]["history"] == {"index": 1, "size": 2}
    png = c2.get(f"/api/rooms/{rooms[1]['room']}/image.png", params={"cap": rooms[1]["view_token"]})
    assert png.status_code == 200


def test_an_idle_room_is_archived_and_reopens_with_its_history(make_client):
    """With room_idle_archive_s=1 a room nobody is in is unloaded within seconds; joining it again
    (or a download) brings it back with its points and history."""
    c = make_client(room_idle_archive_s=1.0, room_unjoined_archive_s=1.0)
    room = create(c).json()
    with join(c, room) as ws:
        ws.send_bytes(encode({"t": "new_image", "seed": 5}))
        ws.send_bytes(encode({"t": "add_pair", "pair": "p1", "handle": [4.0, 4.0], "target": [9.0, 9.0]}))
        recv_until(ws, lambda m: m["t"] == "op" and m["op"] == "add_pair")
        time.sleep(2.5)
        assert health(c)["rooms"] == 1  # someone is in it: never archived
    wait_for(lambda: health(c)["rooms"] == 0)
    with join(c, room, "viewer") as ws:
        state = ws.snapshot["state"]
        assert state["image"]["seed"] == 5 and state["history"]["size"] == 2
        assert [p["id"] for p in state["pairs"]] == ["p1"]
        assert recv_until(ws, lambda m: m["t"] == "frame")[-1]["jpeg"][:2] == b"\xff\xd8"
    wait_for(lambda: health(c)["rooms"] == 0)
    r = c.get(f"/api/rooms/{room['room']}/latent.safetensors", headers={"x-livedrag-cap": room["view_token"]})
    assert r.status_code == 200 and health(c)["rooms"] == 1


def test_an_editor_deletes_a_room_everyone_is_disconnected_and_its_links_say_deleted(make_client):
    """DELETE /api/rooms/{room} with the edit capability: 200, every connection of the room is
    closed with 4014 room_closed, and from then on the downloads answer 410, a hello gets 4014
    and a second DELETE 410. A view capability, or none, gets 403 and deletes nothing."""
    c = make_client()
    room = create(c).json()
    rid = room["room"]
    with join(c, room) as ada, join(c, room, "editor", "Bob") as bob, join(c, room, "viewer", "Vi") as vi:
        assert c.delete(f"/api/rooms/{rid}").status_code == 403
        r = c.delete(f"/api/rooms/{rid}", headers={"x-livedrag-cap": room["view_token"]})
        assert r.status_code == 403 and "edit link" in r.json()["error"]
        assert health(c)["rooms"] == 1
        r = c.delete(f"/api/rooms/{rid}", headers={"x-livedrag-cap": room["edit_token"]})
        assert r.status_code == 200 and r.json() == {"room": rid, "deleted": True}
        assert [close_code(ws) for ws in (ada, bob, vi)] == [4014, 4014, 4014]
    assert health(c)["rooms"] == 0 and health(c)["rooms_stored"] == 0
    r = c.get(f"/api/rooms/{rid}/image.png", params={"cap": room["view_token"]})
    assert r.status_code == 410 and "deleted" in r.json()["error"]
    assert c.delete(f"/api/rooms/{rid}", headers={"x-livedrag-cap": room["edit_token"]}).status_code == 410
    with c.websocket_connect(f"/ws/{rid}") as ws:
        ws.send_bytes(hello(room["edit_token"]))
        assert close_code(ws) == 4014
    assert c.delete("/api/rooms/nosuchroom", headers={"x-livedrag-cap": "x"}).status_code == 404
    other = create(c).json()
    evil = {"x-livedrag-cap": other["edit_token"], "origin": "http://evil.example"}
    assert c.delete(f"/api/rooms/{other['room']}", headers=evil).status_code == 403


def test_an_archived_room_can_be_deleted(make_client):
    """Deleting works on a room that is not loaded (after a restart)."""
    c = make_client()
    room = create(c).json()
    c.__exit__(None, None, None)
    c2 = make_client()
    assert health(c2)["rooms"] == 0
    r = c2.delete(f"/api/rooms/{room['room']}?cap={room['edit_token']}")
    assert r.status_code == 200 and health(c2)["rooms_stored"] == 0


def test_life_cycle_settings_from_flags_and_environment():
    """The settings take durations as seconds or with a unit (s, m, h, d), from LIVEDRAG_*
    variables and the serve flags; the app's life cycle follows them."""
    from server.cli import build_parser
    from server.cli.serve import settings_from_args
    from server.edge.appstate import lifecycle_of

    assert parse_duration("90") == 90 and parse_duration("5m") == 300 and parse_duration("30d") == 30 * 86400
    with pytest.raises(ValueError):
        parse_duration("soon")
    env = {"LIVEDRAG_ROOM_DELETE_AFTER_S": "7d", "LIVEDRAG_MAX_ROOMS_PER_CLIENT": "5"}
    s = Settings.from_env(env)
    assert s.room_delete_after_s == 7 * 86400 and s.max_rooms_per_client == 5
    assert Settings().room_idle_archive_s == 300 and Settings().room_delete_after_s == 30 * 86400
    args = build_parser().parse_args(
        ["serve", "--room-idle-archive", "2m", "--room-delete-after", "0", "--max-rooms-per-client", "3"]
    )
    s = settings_from_args(args)
    assert (s.room_idle_archive_s, s.room_delete_after_s, s.max_rooms_per_client) == (120, 0, 3)
    assert lifecycle_of(s) == Lifecycle(idle_archive_s=120, delete_after_s=0, max_rooms_per_client=3)
    with pytest.raises(ValueError):
        Settings(room_idle_archive_s=0)


def test_per_client_limits_count_an_ipv6_host_by_its_64():
    """One IPv6 host holds a /64: its addresses count as one client; IPv4-mapped ones as IPv4."""
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_key("::ffff:10.0.0.1") == "10.0.0.1" and client_key("10.0.0.1") == "10.0.0.1"
