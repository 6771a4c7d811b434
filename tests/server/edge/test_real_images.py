"""Real images over the app: uploads refused cleanly, projections streamed, stopped, undone, blended,
and a restart in the middle of a projection."""

from __future__ import annotations

import contextlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from server.core.protocol import encode
from server.edge.app import create_app
from server.worker.latents import latent_from_bytes
from tests.server.live import RES, TestClient, hello, make_settings, recv_msg, recv_until


@pytest.fixture
def make_client(tmp_path: Path):
    clients: list[TestClient] = []

    def make(**kw) -> TestClient:
        kw.setdefault("uploads_per_minute", 600.0)
        kw.setdefault("project_steps", 3)
        c = TestClient(create_app(make_settings(tmp_path, **kw)))
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in clients:
        with contextlib.suppress(Exception):
            c.__exit__(None, None, None)


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


def new_room(c: TestClient, seed: int = 42) -> dict:
    r = c.post("/api/rooms", json={"seed": seed})
    assert r.status_code == 201, r.text
    return r.json()


@contextlib.contextmanager
def join(c: TestClient, room: dict, role: str = "editor", name: str = "Ada"):
    with c.websocket_connect(f"/ws/{room['room']}") as ws:
        ws.send_bytes(hello(room["edit_token" if role == "editor" else "view_token"], name))
        welcome = recv_msg(ws)
        assert welcome["t"] == "welcome"
        ws.welcome = welcome  # type: ignore[attr-defined]
        snapshot = recv_msg(ws)
        assert snapshot["t"] == "snapshot"
        ws.snapshot = snapshot  # type: ignore[attr-defined]
        yield ws


def picture(size: int = 48, seed: int = 0, fmt: str = "PNG") -> bytes:
    """A small colourful picture (not square, so the server crops it)."""
    rng = np.random.default_rng(seed)
    a = np.zeros((size, size + 8, 3), np.uint8)
    a[..., 0] = np.linspace(0, 255, size + 8, dtype=np.uint8)[None]
    a[..., 1] = rng.integers(0, 255, (size, size + 8), dtype=np.uint8) // 4 + 96
    a[: size // 2, :, 2] = 200
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format=fmt)
    return buf.getvalue()


def bomb_png(width: int = 60_000, height: int = 60_000) -> bytes:
    """A tiny PNG whose header claims billions of pixels (a decompression bomb's shape)."""
    data = picture(8)
    ihdr = data[16:29]
    new = struct.pack(">II", width, height) + ihdr[8:]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + new) & 0xFFFFFFFF)
    return data[:16] + new + crc + data[33:]


def upload(c: TestClient, room: dict, body: bytes, cap: str | None = "edit", query: str = "", **headers):
    token = {"edit": room["edit_token"], "view": room["view_token"]}.get(cap or "")
    q = "&".join(x for x in (f"cap={token}" if token else "", query) if x)
    headers.setdefault("content-type", "image/png")
    return c.post(f"/api/rooms/{room['room']}/upload?{q}", content=body, headers=headers)


def state_of(c: TestClient, room: dict) -> dict:
    """The room's state as a late joiner sees it."""
    with join(c, room, "viewer") as ws:
        return ws.snapshot  # type: ignore[attr-defined]


def projection(ws, pred=lambda m: m["t"] == "status" and m["status"] == "idle") -> list[dict]:
    return recv_until(ws, pred)


# --- refusals -----------------------------------------------------------------------------------


BAD = {
    "gif": (lambda: picture(fmt="GIF"), {"content-type": "image/png"}, 415),
    "text-type": (lambda: b"hello", {"content-type": "text/plain"}, 415),
    "not-a-picture": (lambda: b"\x00" * 64, {"content-type": "application/octet-stream"}, 415),
    "truncated": (lambda: picture()[:200], {}, 400),
    "bomb": (bomb_png, {}, 400),
    "empty": (lambda: b"", {}, 400),
    "bad-method": (picture, {"x-query": "method=magic"}, 400),
    "steps-out-of-range": (picture, {"x-query": "steps=0"}, 400),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_uploads_are_refused_and_change_nothing(client, case):
    """Wrong type, truncated, bomb, empty or bad options: a JSON error, the room untouched."""
    make_body, headers, status = BAD[case]
    room = new_room(client)
    before = state_of(client, room)
    query = headers.pop("x-query", "")
    r = upload(client, room, make_body(), query=query, **headers)
    assert r.status_code == status, r.text
    assert r.json()["error"]
    after = state_of(client, room)
    assert after["version"] == before["version"] and after["state"] == before["state"]
    assert after["state"]["upload"] is None and after["state"]["status"] == "idle"
    assert client.get(f"/api/rooms/{room['room']}/upload.png?cap={room['view_token']}").status_code == 404


def test_uploads_need_the_edit_capability_and_a_size_under_the_cap(make_client):
    """No cap or a view cap: 403; over max_upload_bytes (declared or streamed): 413; nothing changes."""
    c = make_client(max_upload_bytes=4096)
    room = new_room(c)
    before = state_of(c, room)
    assert upload(c, room, picture(), cap=None).status_code == 403
    r = upload(c, room, picture(), cap="view")
    assert r.status_code == 403 and "edit link" in r.json()["error"]
    big = picture(size=96)
    assert len(big) > 4096
    assert upload(c, room, big).status_code == 413
    chunks = iter([big[:2000], big[2000:]])  # streamed without a Content-Length
    r = c.post(
        f"/api/rooms/{room['room']}/upload?cap={room['edit_token']}",
        content=chunks,
        headers={"content-type": "image/png"},
    )
    assert r.status_code == 413
    assert c.post("/api/rooms/nope/upload?cap=x", content=picture()).status_code == 404
    assert state_of(c, room)["state"] == before["state"]


def test_uploads_are_rate_limited_per_room(make_client):
    """Past uploads_per_minute (burst 2x) a room's uploads get 429."""
    c = make_client(uploads_per_minute=1.0)
    room = new_room(c)
    codes = [upload(c, room, b"junk").status_code for _ in range(3)]
    assert codes == [415, 415, 429]


# --- projections --------------------------------------------------------------------------------


def test_an_upload_projects_live_for_everyone_and_commits_an_undoable_image(client):
    """A spectator sees the upload op, projecting frames with PSNR, and the finish commit; the editor
    who sent it (member=) may undo it back to the pre-upload image, and redo, nobody else; downloads
    serve the projected image."""
    room = new_room(client)
    rid, view = room["room"], room["view_token"]
    with join(client, room) as ws, join(client, room, "viewer") as spectator:
        me = ws.welcome["you"]  # type: ignore[attr-defined]
        start = spectator.snapshot["state"]  # type: ignore[attr-defined]
        assert upload(client, room, picture(), query="steps=3&member=nobody").status_code == 400
        r = upload(client, room, picture(), query=f"steps=3&member={me}")
        assert r.status_code == 202, r.text
        assert r.json()["method"] == "optimize" and r.json()["max_steps"] == 3
        msgs = projection(spectator)
        op = next(m for m in msgs if m["t"] == "op" and m["op"] == "upload")
        assert op["by"] == me and op["patch"]["status"] == "projecting"
        assert op["patch"]["task"] == {"kind": "upload", "method": "optimize", "max_steps": 3, "by": me}
        assert op["patch"]["upload"]["key"] == r.json()["upload"]
        frames = [m for m in msgs if m["t"] == "frame" and m["step"] > 0]  # (a join's render may come first)
        assert [f["step"] for f in frames] == [1, 2, 3]
        assert all(isinstance(f["psnr"], float) and "loss" in f for f in frames)
        finish = next(m for m in msgs if m["t"] == "op" and m["op"] == "finish")
        image = finish["patch"]["image"]
        assert image["latent"] and image["seed"] is None and finish["patch"]["task"] is None
        assert finish["patch"]["history"] == {"index": 1, "size": 2}
        assert msgs[-1]["reason"] in ("max_steps", "converged")

        target = client.get(f"/api/rooms/{rid}/upload.png?cap={view}")
        assert target.status_code == 200 and Image.open(io.BytesIO(target.content)).size == (RES, RES)
        lat = client.get(f"/api/rooms/{rid}/latent.safetensors?cap={view}")
        assert lat.status_code == 200 and latent_from_bytes(lat.content, 8, 32).shape == (1, 8, 32)
        assert client.get(f"/api/rooms/{rid}/image.png?cap={view}").status_code == 200
        assert client.get(f"/api/rooms/{rid}/trajectory.gif?cap={view}").status_code == 200

        state = recv_until(ws, lambda m: m["t"] == "undo_state" and m["undo"] == 1)[-1]
        assert state["undo_kind"] == "upload"
        with join(client, room, name="Grace") as other:  # not hers to undo
            other.send_bytes(encode({"t": "undo", "id": 9}))
            assert recv_until(other, lambda m: m["t"] == "error")[-1]["code"] == "nothing_to_undo"
        ws.send_bytes(encode({"t": "undo", "id": 1}))
        undo = recv_until(ws, lambda m: m["t"] == "op" and m["op"] == "undo")[-1]
        assert undo["patch"]["image"] == start["image"] and undo["patch"]["history"]["index"] == 0
        recv_until(ws, lambda m: m["t"] == "frame")  # the old image is rendered again
        ws.send_bytes(encode({"t": "redo", "id": 2}))
        redo = recv_until(ws, lambda m: m["t"] == "op" and m["op"] == "redo")[-1]
        assert redo["patch"]["image"] == image
        # the projected image is an ordinary image: a drag from it works
        ws.send_bytes(encode({"t": "add_pair", "pair": "p1", "handle": [8.0, 8.0], "target": [12.0, 9.0]}))
        ws.send_bytes(encode({"t": "set_params", "params": {"max_steps": 2}}))
        ws.send_bytes(encode({"t": "start", "id": 3}))
        done = recv_until(ws, lambda m: m["t"] == "op" and m["op"] == "finish")[-1]
        assert done["patch"]["history"] == {"index": 2, "size": 3}


def test_stop_ends_a_projection_early_and_keeps_its_latent(client):
    """While projecting, drags, undo and a second upload are refused; stop commits what it reached."""
    room = new_room(client)
    with join(client, room) as ws:
        ws.send_bytes(encode({"t": "new_image", "id": 9, "seed": 3}))  # an image of hers to undo
        recv_until(ws, lambda m: m["t"] == "op" and m["op"] == "new_image")
        assert upload(client, room, picture(), query="steps=1000").status_code == 202
        recv_until(ws, lambda m: m["t"] == "frame" and m["status"] == "projecting" and m["step"] >= 1)
        ws.send_bytes(encode({"t": "undo", "id": 1}))
        err = recv_until(ws, lambda m: m["t"] == "error")[-1]
        assert err["code"] == "busy" and err["ref"] == 1 and "projection" in err["message"]
        ws.send_bytes(encode({"t": "add_pair", "pair": "p1", "handle": [8.0, 8.0], "target": [12.0, 9.0]}))
        ws.send_bytes(encode({"t": "start", "id": 2}))
        assert recv_until(ws, lambda m: m["t"] == "error")[-1]["code"] == "busy"
        assert upload(client, room, picture(seed=1)).status_code == 409
        ws.send_bytes(encode({"t": "stop", "id": 3}))
        msgs = recv_until(ws, lambda m: m["t"] == "status" and m["status"] == "idle")
    finish = next(m for m in msgs if m["t"] == "op" and m["op"] == "finish")
    assert msgs[-1]["reason"] == "stopped" and 1 <= finish["patch"]["step"] < 1000
    assert finish["patch"]["image"]["latent"] and finish["patch"]["pairs"] == []
    assert finish["patch"]["history"]["size"] == 3  # the seed, her new image, the projection


def test_a_multipart_upload_with_the_encoder_refused_without_one(client):
    """multipart/form-data works (the file part); method encoder is refused on a server without one."""
    room = new_room(client)
    info = client.get("/api/info").json()
    assert info["projection"] == ["optimize"]
    r = client.post(
        f"/api/rooms/{room['room']}/upload?cap={room['edit_token']}&method=encoder",
        files={"file": ("face.png", picture(), "image/png")},
    )
    assert r.status_code == 400 and "encoder" in r.json()["error"]
    with join(client, room, "viewer") as ws:
        r = client.post(
            f"/api/rooms/{room['room']}/upload?cap={room['edit_token']}&steps=1",
            files={"file": ("face.jpg", picture(fmt="JPEG"), "image/jpeg")},
        )
        assert r.status_code == 202, r.text
        msgs = projection(ws)
    assert next(m for m in msgs if m["t"] == "op" and m["op"] == "finish")["patch"]["image"]["latent"]


def test_blend_commits_a_new_image_from_a_seed_and_from_the_upload(client):
    """Paint a flexible region, blend another seed (then the upload) into it: each commits an entry."""
    room = new_room(client)
    with join(client, room) as ws:
        ws.send_bytes(encode({"t": "blend", "id": 1, "source": "seed", "seed": 7, "steps": 2}))
        assert recv_until(ws, lambda m: m["t"] == "error")[-1]["code"] == "no_region"
        ws.send_bytes(encode({"t": "blend", "id": 2, "source": "upload"}))
        assert recv_until(ws, lambda m: m["t"] == "error")[-1]["code"] == "no_region"
        stroke = {
            "t": "paint_mask",
            "mode": "flexible",
            "radius": 6.0,
            "points": [[10.0, 12.0], [20.0, 14.0]],
        }
        ws.send_bytes(encode({**stroke, "id": 3}))
        ws.send_bytes(encode({"t": "blend", "id": 4, "source": "upload"}))
        assert recv_until(ws, lambda m: m["t"] == "error")[-1]["code"] == "no_upload"
        ws.send_bytes(encode({"t": "blend", "id": 5, "source": "seed", "seed": 7, "steps": 2}))
        msgs = recv_until(ws, lambda m: m["t"] == "status" and m["status"] == "idle")
        op = next(m for m in msgs if m["t"] == "op" and m["op"] == "blend")
        assert (
            op["ref"] == 5
            and op["patch"]["task"]["kind"] == "blend"
            and op["patch"]["task"]["max_steps"] == 2
        )
        finish = next(m for m in msgs if m["t"] == "op" and m["op"] == "finish")
        assert finish["patch"]["image"]["latent"] and finish["patch"]["image"]["seed"] == 42
        assert finish["patch"]["history"]["size"] == 2 and not any(finish["patch"]["mask"]["cells"])

        assert upload(client, room, picture(), query="steps=1").status_code == 202
        recv_until(ws, lambda m: m["t"] == "status" and m["status"] == "idle")
        ws.send_bytes(encode({**stroke, "id": 6}))
        ws.send_bytes(encode({"t": "blend", "id": 7, "source": "upload", "steps": 1}))
        msgs = recv_until(ws, lambda m: m["t"] == "status" and m["status"] == "idle")
        assert (
            next(m for m in msgs if m["t"] == "op" and m["op"] == "finish")["patch"]["history"]["size"] == 4
        )
        ws.send_bytes(encode({"t": "undo", "id": 8}))
        undo = recv_until(ws, lambda m: m["t"] == "op" and m["op"] == "undo")[-1]
        assert any(undo["patch"]["mask"]["cells"])  # the painted region comes back with the undo


def test_a_restart_mid_projection_leaves_the_room_on_its_last_image(make_client):
    """Shut down while projecting: the room comes back idle on the pre-upload image, upload kept."""
    c = make_client()
    room = new_room(c)
    with join(c, room) as ws:
        start = ws.snapshot["state"]  # type: ignore[attr-defined]
        r = upload(c, room, picture(), query="steps=1000")
        assert r.status_code == 202
        recv_until(ws, lambda m: m["t"] == "frame" and m["status"] == "projecting")
    c.__exit__(None, None, None)

    c2 = make_client()
    with join(c2, room) as ws:
        state = ws.snapshot["state"]  # type: ignore[attr-defined]
        assert state["status"] == "idle" and state["task"] is None
        assert state["image"] == start["image"] and state["history"] == start["history"]
        assert state["upload"]["key"] == r.json()["upload"]
        frame = recv_until(ws, lambda m: m["t"] == "frame")[-1]
        assert frame["status"] == "idle"
        # the stored upload still serves as a blend source
        stroke = {"t": "paint_mask", "id": 1, "mode": "flexible", "radius": 8.0, "points": [[16.0, 16.0]]}
        ws.send_bytes(encode(stroke))
        ws.send_bytes(encode({"t": "blend", "id": 2, "source": "upload", "steps": 1}))
        msgs = recv_until(ws, lambda m: m["t"] == "status" and m["status"] == "idle")
        assert (
            next(m for m in msgs if m["t"] == "op" and m["op"] == "finish")["patch"]["history"]["size"] == 2
        )
    assert c2.get(f"/api/rooms/{room['room']}/upload.png?cap={room['view_token']}").status_code == 200


def test_method_encoder_gives_one_frame_and_commits_it(tmp_path, make_client):
    """With an encoder file for the model, /api/info offers it and an upload projects in one frame."""
    from server.engine.checkpoint import load_generator
    from server.engine.encoder import Encoder, EncoderConfig, save_encoder

    settings = make_settings(tmp_path)
    G = load_generator(settings.checkpoint)
    torch.manual_seed(0)
    enc = Encoder(EncoderConfig.for_generator(G, channels=(8, 16), feat_dim=16, row_dim=16))
    path = save_encoder(tmp_path / "enc.safetensors", enc, G)
    c = make_client(encoder=str(path))
    assert c.get("/api/info").json()["projection"] == ["encoder", "optimize"]
    room = new_room(c)
    with join(c, room, "viewer") as ws:
        r = upload(c, room, picture(), query="method=encoder")
        assert r.status_code == 202 and r.json()["method"] == "encoder" and r.json()["max_steps"] == 0
        msgs = projection(ws)
    assert [m["step"] for m in msgs if m["t"] == "frame" and m["step"] > 0] == [1]
    finish = next(m for m in msgs if m["t"] == "op" and m["op"] == "finish")
    assert finish["patch"]["image"]["latent"] and msgs[-1]["reason"] == "max_steps"
