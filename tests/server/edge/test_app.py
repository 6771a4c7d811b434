"""The Starlette app over the test client: HTTP API, pages, downloads, websocket handshake and limits."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import pytest
from PIL import Image
from starlette.websockets import WebSocketDisconnect

from server.core.protocol import encode
from server.core.protocol_types import LIMITS
from server.edge.app import create_app
from server.edge.config import Settings
from server.edge.serve import RedactQueryFilter
from server.worker.latents import latent_from_bytes
from tests.server.live import (
    RES,
    TestClient,
    close_code,
    hello,
    make_settings,
    recv_msg,
    recv_until,
    tiny_predictor,
)


@pytest.fixture
def make_client(tmp_path: Path):
    clients: list[TestClient] = []

    def make(**kw) -> TestClient:
        c = TestClient(create_app(make_settings(tmp_path, **kw)))
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


def new_room(c: TestClient, **body) -> dict:
    r = c.post("/api/rooms", json=body)
    assert r.status_code == 201, r.text
    return r.json()


@contextlib.contextmanager
def join(c: TestClient, room: dict, role: str = "editor", name: str = "Ada", **kw):
    with c.websocket_connect(f"/ws/{room['room']}", **kw) as ws:
        ws.send_bytes(hello(room["edit_token" if role == "editor" else "view_token"], name))
        assert recv_msg(ws)["t"] == "welcome"
        assert recv_msg(ws)["t"] == "snapshot"
        yield ws


# --- HTTP ------------------------------------------------------------------------------------


def test_info_and_health_describe_the_server(client):
    """/api/info names the model, resolution, modes and protocol; /healthz counts rooms."""
    info = client.get("/api/info").json()
    assert info["resolution"] == RES and info["modes"] == ["optimize"] and info["protocol_version"] == 1
    # the test model has no predictor of its own (a shipped one would belong to the default model)
    assert "predictor" in info["unavailable_modes"].get("predict", "")
    new_room(client)
    health = client.get("/healthz").json()
    assert (
        health["ok"]
        and health["rooms"] == 1
        and health["device"] == "cpu"
        and health["model"] == info["model"]
    )


def test_a_predictor_file_turns_predict_mode_on(tmp_path):
    """--predictor with a file trained for the loaded generator adds predict to the modes."""
    from server.engine.checkpoint import load_generator
    from server.engine.predictor_io import save_predictor

    settings = make_settings(tmp_path)
    bundle = tiny_predictor(load_generator(settings.checkpoint))
    path = save_predictor(bundle, tmp_path / "predictor.safetensors")
    with TestClient(create_app(settings.replace(predictor=str(path)))) as c:
        info = c.get("/api/info").json()
        assert info["modes"] == ["optimize", "predict"] and info["unavailable_modes"] == {}


def test_a_new_room_comes_with_edit_and_view_links(client):
    """POST /api/rooms answers the room id, both capabilities and the links carrying them."""
    room = new_room(client, seed=7, truncation=0.5)
    assert room["edit_url"] == f"http://testserver/r/{room['room']}#edit={room['edit_token']}"
    assert room["view_url"] == f"http://testserver/r/{room['room']}#view={room['view_token']}"
    assert room["seed"] == 7 and room["truncation"] == 0.5
    assert len(room["edit_token"]) >= 32 and room["edit_token"] != room["view_token"]


@pytest.mark.parametrize(
    "body",
    [b"[1]", b"{", b'{"seed": -1}', b'{"seed": 1.5}', b'{"seed": true}', b'{"truncation": 3}', b'{"x": 1}'],
)
def test_room_creation_refuses_bad_bodies(client, body):
    """Bodies that are not an object of a valid seed and truncation are refused with 400."""
    r = client.post("/api/rooms", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]


def test_room_creation_checks_size_origin_and_rate(make_client):
    """Oversized bodies (413), foreign origins (403) and floods (429 with Retry-After) are refused
    (the rooms caps and the life cycle: test_lifecycle.py)."""
    c = make_client(rooms_per_minute=1.0)
    assert c.post("/api/rooms", content=b" " * 5000).status_code == 413
    assert c.post("/api/rooms", json={}, headers={"origin": "http://evil.example"}).status_code == 403
    assert c.post("/api/rooms", json={}, headers={"origin": "http://testserver"}).status_code == 201
    assert c.post("/api/rooms", json={}).status_code == 201
    r = c.post("/api/rooms", json={})
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60 and r.json()["error"]


def test_downloads_need_a_capability_of_the_room(client):
    """image.png and latent.safetensors answer 404 for unknown rooms, 403 without a capability."""
    room = new_room(client, seed=3)
    rid, view = room["room"], room["view_token"]
    assert client.get("/api/rooms/nope/image.png?cap=x").status_code == 404
    assert client.get(f"/api/rooms/{rid}/image.png").status_code == 403
    assert client.get(f"/api/rooms/{rid}/image.png?cap=wrong").status_code == 403
    png = client.get(f"/api/rooms/{rid}/image.png?cap={view}")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (RES, RES)
    lat = client.get(f"/api/rooms/{rid}/latent.safetensors", headers={"x-livedrag-cap": room["edit_token"]})
    assert lat.status_code == 200
    assert latent_from_bytes(lat.content, 8, 32).shape == (1, 8, 32)  # the tiny 32 px model's W+
    assert client.get(f"/api/rooms/{rid}/trajectory.gif?cap={view}").status_code == 404  # no drag yet


def test_pages_static_files_and_security_headers(client, tmp_path):
    """/ and /r/{room} serve the web client's pages, /static its files, all with nosniff/no-referrer."""
    assert client.get("/").status_code == 404  # no web client installed in this test's web dir
    web = tmp_path / "web"
    (web / "js").mkdir(parents=True)
    (web / "index.html").write_text("<h1>start</h1>")
    (web / "room.html").write_text("<h1>room</h1>")
    (web / "js" / "app.js").write_text("export {};")
    r = client.get("/")
    assert r.status_code == 200 and "start" in r.text
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"
    assert "room" in client.get("/r/abc").text
    assert client.get("/static/js/app.js").text == "export {};"


# --- websocket ---------------------------------------------------------------------------------


def test_joining_gives_welcome_snapshot_and_a_frame(client):
    """A hello is answered by welcome and snapshot, then the rendered image arrives as a frame."""
    room = new_room(client)
    with client.websocket_connect(f"/ws/{room['room']}") as ws:
        ws.send_bytes(hello(room["edit_token"], "Ada"))
        welcome, snapshot = recv_msg(ws), recv_msg(ws)
        assert welcome["t"] == "welcome" and welcome["role"] == "editor" and welcome["name"] == "Ada"
        assert snapshot["t"] == "snapshot" and snapshot["members"][0]["id"] == welcome["you"]
        frame = recv_until(ws, lambda m: m["t"] == "frame")[-1]
        assert frame["w"] == RES and frame["jpeg"][:2] == b"\xff\xd8"


def test_a_drag_over_the_websocket_finishes_and_makes_a_gif(client):
    """add_pair + start runs a drag whose frames stream until the finish op; the GIF is then served."""
    room = new_room(client)
    with join(client, room) as ws:
        ws.send_bytes(encode({"t": "add_pair", "pair": "p1", "handle": [8.0, 8.0], "target": [12.0, 9.0]}))
        ws.send_bytes(encode({"t": "set_params", "params": {"max_steps": 3}}))
        ws.send_bytes(encode({"t": "start", "id": 9}))
        msgs = recv_until(ws, lambda m: m["t"] == "status" and m["status"] == "idle")
    steps = [m["step"] for m in msgs if m["t"] == "frame" and m["step"] > 0]
    assert steps == [1, 2, 3]
    finish = [m for m in msgs if m["t"] == "op" and m["op"] == "finish"][0]
    assert finish["patch"]["history"]["size"] == 2
    gif = client.get(f"/api/rooms/{room['room']}/trajectory.gif?cap={room['view_token']}")
    assert gif.status_code == 200 and Image.open(io.BytesIO(gif.content)).n_frames == 3


@pytest.mark.parametrize(
    "first, code",
    [
        (lambda r: {"t": "hello", "v": 2, "cap": r["edit_token"], "name": "A"}, 4002),
        (lambda r: {"t": "hello", "v": 1, "cap": "not-a-token", "name": "A"}, 4001),
        (lambda r: {"t": "ping"}, 4000),
        (lambda r: {"t": "hello", "v": 1, "cap": r["edit_token"], "name": "A", "extra": 1}, 4000),
        (lambda r: b"\xc1", 4000),
        (lambda r: "text", 4000),
        (lambda r: b"\x00" * (LIMITS["max_message_bytes"] + 1), 4009),
    ],
    ids=["version", "capability", "not-hello", "unknown-field", "not-msgpack", "text", "oversize"],
)
def test_bad_handshakes_close_with_the_contract_codes(client, first, code):
    """Each kind of bad first message closes the connection with its own close code."""
    room = new_room(client)
    with client.websocket_connect(f"/ws/{room['room']}") as ws:
        msg = first(room)
        if isinstance(msg, str):
            ws.send_text(msg)
        else:
            ws.send_bytes(msg if isinstance(msg, bytes) else encode(msg))
        assert close_code(ws) == code


def test_unknown_rooms_and_late_hellos(make_client):
    """An unknown room closes with 4004; no hello within hello_timeout_s closes with 4008."""
    c = make_client(hello_timeout_s=0.3)
    with c.websocket_connect("/ws/nosuchroom") as ws:
        ws.send_bytes(hello("x" * 32))
        assert close_code(ws) == 4004
    room = new_room(c)
    with c.websocket_connect(f"/ws/{room['room']}") as ws:
        assert close_code(ws) == 4008


def test_viewers_may_watch_but_not_edit(client):
    """A view-only connection gets frames, and every edit is refused with forbidden."""
    room = new_room(client)
    with join(client, room, role="viewer", name="Eve") as ws:
        ws.send_bytes(
            encode({"t": "add_pair", "id": 4, "pair": "p", "handle": [1.0, 1.0], "target": [2.0, 2.0]})
        )
        err = recv_until(ws, lambda m: m["t"] == "error")[-1]
        assert (err["code"], err["ref"]) == ("forbidden", 4)
        ws.send_bytes(encode({"t": "ping", "id": 5}))
        assert recv_until(ws, lambda m: m["t"] == "pong")[-1]["ref"] == 5


def test_oversize_messages_close_with_4009(client):
    """A message over the protocol's size cap gets too_large and the connection is closed with 4009."""
    room = new_room(client)
    msgs = []
    with join(client, room) as ws:
        ws.send_bytes(b"\x90" * (LIMITS["max_message_bytes"] + 10))
        while isinstance(m := recv_msg_or_close(ws), dict):
            msgs.append(m)
    assert m == 4009 and any(x["t"] == "error" and x["code"] == "too_large" for x in msgs)


def recv_msg_or_close(ws) -> dict | int:
    from tests.server.live import recv, unpack

    m = recv(ws)
    return m.get("code", 1000) if m["type"] == "websocket.close" else unpack(m["bytes"])


def test_caps_on_members_and_connections(make_client):
    """Past max_editors a join closes with 4005 room_full; past max_connections with 4006 server_full."""
    c = make_client(max_editors=1, max_connections=2)
    room = new_room(c)
    with join(c, room):
        with c.websocket_connect(f"/ws/{room['room']}") as ws:
            ws.send_bytes(hello(room["edit_token"], "Bob"))
            assert close_code(ws) == 4005
        with join(c, room, role="viewer"), c.websocket_connect(f"/ws/{room['room']}") as ws:
            assert close_code(ws) == 4006


def test_foreign_origins_are_refused_before_the_handshake(make_client):
    """A page from another origin cannot open a websocket (403, close 4003); allowed ones can."""
    c = make_client(origins=("https://app.example",))
    room = new_room(c)
    evil = {"origin": "http://evil.example"}
    with pytest.raises(WebSocketDisconnect) as e, c.websocket_connect(f"/ws/{room['room']}", headers=evil):
        pass
    assert e.value.code == 4003
    for origin in ("http://testserver", "https://app.example"):
        with join(c, room, headers={"origin": origin}):
            pass


def test_the_same_page_reconnecting_replaces_its_old_connection(client):
    """A hello with a known client_id gets the same member id; the old connection closes with 4017."""
    room = new_room(client)
    path = f"/ws/{room['room']}"
    with client.websocket_connect(path) as old, client.websocket_connect(path) as new:
        old.send_bytes(hello(room["edit_token"], "Ada", client_id="tab-12345678"))
        me = recv_msg(old)["you"]
        new.send_bytes(hello(room["edit_token"], "Ada", client_id="tab-12345678"))
        assert recv_msg(new)["you"] == me  # welcome first: no presence about its own old session
        assert close_code(old) == 4017


def test_silent_connections_are_closed_idle(make_client):
    """A joined connection that sends nothing for idle_timeout_s is closed with 4015."""
    c = make_client(idle_timeout_s=0.5)
    room = new_room(c)
    with join(c, room) as ws:
        assert close_code(ws) == 4015


def test_repeated_invalid_messages_close_protocol_violation(client):
    """Each invalid message gets an error; past the strike budget the connection closes with 4013."""
    room = new_room(client)
    codes = []
    with join(client, room) as ws:
        for _ in range(int(LIMITS["strike_burst"]) + 1):
            ws.send_bytes(encode({"t": "add_pair", "pair": "bad id!"}))
        while isinstance(m := recv_msg_or_close(ws), dict):
            if m["t"] == "error":
                codes.append(m["code"])
    assert m == 4013 and codes and set(codes) == {"invalid_field"}


# --- settings and logs -------------------------------------------------------------------------


def test_access_log_lines_never_show_query_strings():
    """The log filter strips query strings (capabilities) from uvicorn's access log arguments."""
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("1.2.3.4", "GET", "/api/rooms/r/image.png?cap=SECRET", "1.1", 200), None,
    )  # fmt: skip
    RedactQueryFilter().filter(record)
    assert "SECRET" not in record.getMessage() and "/api/rooms/r/image.png?[redacted]" in record.getMessage()


def test_settings_come_from_the_environment_then_overrides(tmp_path):
    """LIVEDRAG_* variables fill the settings, explicit overrides win, bad values name the variable."""
    env = {
        "LIVEDRAG_PORT": "9001",
        "LIVEDRAG_ORIGINS": "https://a.example, https://b.example/",
        "LIVEDRAG_MAX_FPS": "12.5",
    }
    s = Settings.from_env(env, data_dir=tmp_path, port=None, jpeg_quality=70)
    assert (s.port, s.max_fps, s.jpeg_quality, s.data_dir) == (9001, 12.5, 70, tmp_path)
    assert s.origins == ("https://a.example", "https://b.example")
    with pytest.raises(ValueError, match="LIVEDRAG_PORT"):
        Settings.from_env({"LIVEDRAG_PORT": "eighty"})
    with pytest.raises(ValueError, match="origin"):
        Settings(origins=("evil.example",))
    assert json.loads(json.dumps(s.ws_max_size)) > LIMITS["max_message_bytes"]


def test_serve_flags_become_settings_and_uvicorn_options(tmp_path):
    """`livedrag serve` flags override the environment; uvicorn gets the size cap and no deflate."""
    from server.cli import build_parser
    from server.cli.serve import default_torch_threads, settings_from_args
    from server.edge.serve import uvicorn_config

    args = build_parser().parse_args(
        [
            "serve",
            "--port",
            "9100",
            "--origin",
            "https://a.example",
            "--data-dir",
            str(tmp_path),
            "--max-fps",
            "12",
        ]
    )
    s = settings_from_args(args)
    assert (s.port, s.origins, s.data_dir, s.max_fps) == (9100, ("https://a.example",), tmp_path, 12.0)
    config = uvicorn_config(create_app(s), s)
    assert config.ws_per_message_deflate is False and config.ws_max_size == s.ws_max_size
    from server.edge.serve import WSProtocol

    assert config.ws is WSProtocol is not None  # frames over ws_max_size close 4009, not 1009
    assert [default_torch_threads(n) for n in (1, 2, 8)] == [1, 1, 7]
