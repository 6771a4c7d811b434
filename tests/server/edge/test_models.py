"""Several models on one server: rooms choose theirs at creation, everything per room follows it,
models load on first use and unload when idle, and a model that cannot load fails only its rooms."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from PIL import Image

from server.core.protocol import encode
from server.edge.app import create_app
from server.models import ModelLibrary
from server.worker.latents import latent_from_bytes
from tests.models.helpers import write_encoder, write_generator, write_predictor
from tests.server.edge.test_app import join, new_room
from tests.server.live import RES, TestClient, make_settings, recv_until


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A library with a 16 px model offering predict and encoder, and a broken one."""
    root = tmp_path / "models"
    root.mkdir()
    src, G = write_generator(tmp_path / "g16.safetensors", seed=3, res=16)
    ModelLibrary(root).add(
        src,
        name="cats16",
        licence="CC0-1.0",
        source="a test generator",
        predictor=write_predictor(tmp_path / "p16.safetensors", G),
        encoder=write_encoder(tmp_path / "e16.safetensors", G),
    )
    broken, _ = write_generator(tmp_path / "b16.safetensors", seed=4, res=16)
    ModelLibrary(root).add(broken, name="broken16")
    (root / "broken16" / "generator.safetensors").write_bytes(b"not a safetensors file at all")
    return root


@pytest.fixture
def client(tmp_path: Path, library: Path):
    c = TestClient(create_app(make_settings(tmp_path, models_dir=library, model_idle_s=3600)))
    c.__enter__()
    yield c
    c.__exit__(None, None, None)


def frame_of(ws) -> dict:
    return recv_until(ws, lambda m: m["t"] == "frame")[-1]


def test_the_api_lists_every_model_with_its_card(client):
    r = client.get("/api/models")
    assert r.status_code == 200
    body = r.json()
    names = [m["name"] for m in body["models"]]
    assert body["default"] == names[0] == "tiny-32-skip"
    assert {"cats16", "broken16"} <= set(names)
    assert len(names) == len(set(names)) == 4  # the embedded model is always offered too
    cats = next(m for m in body["models"] if m["name"] == "cats16")
    assert cats["resolution"] == 16 and cats["licence"] == "CC0-1.0" and cats["source"] == "a test generator"
    assert cats["loaded"] is False  # nothing loads until a room needs it
    default = body["models"][0]
    assert default["loaded"] and default["default"] and "optimize" in default["modes"]
    info = client.get("/api/info").json()
    assert info["default_model"] == "tiny-32-skip" and info["models"] == body["models"]


def test_a_room_on_a_library_model_runs_on_it(client):
    """Frame size, modes, the latent format and downloads follow the room's model; the default
    model's rooms keep theirs."""
    room = new_room(client, model="cats16", seed=5)
    assert room["model"] == "cats16"
    other = new_room(client, seed=5)
    assert other["model"] == "tiny-32-skip"
    with join(client, room) as ws, join(client, other, name="Bo") as ws2:
        assert frame_of(ws)["w"] == 16
        assert frame_of(ws2)["w"] == RES
        listed = {m["name"]: m for m in client.get("/api/models").json()["models"]}
        assert listed["cats16"]["loaded"] is True
        assert listed["cats16"]["modes"] == ["optimize", "predict"]
        assert listed["cats16"]["projection"] == ["encoder", "optimize"]
        ws.send_bytes(encode({"t": "add_pair", "pair": "p1", "handle": [4.0, 4.0], "target": [8.0, 6.0]}))
        ws.send_bytes(encode({"t": "set_params", "params": {"max_steps": 3, "mode": "predict"}}))
        ws.send_bytes(encode({"t": "start", "id": 1}))
        msgs = recv_until(ws, lambda m: m["t"] == "status" and m["status"] == "idle")
        frames = [m for m in msgs if m["t"] == "frame" and m["step"] > 0]
        assert frames and all(m["w"] == 16 for m in frames)
        assert not [m for m in msgs if m["t"] == "error"]
    png = client.get(f"/api/rooms/{room['room']}/image.png?cap={room['view_token']}")
    assert png.status_code == 200 and Image.open(io.BytesIO(png.content)).size == (16, 16)
    lat = client.get(f"/api/rooms/{room['room']}/latent.safetensors?cap={room['view_token']}")
    assert lat.status_code == 200
    w = latent_from_bytes(lat.content, 6, 32)  # the 16 px tiny generator's W+: 6 rows of 32
    assert tuple(w.shape) == (1, 6, 32)


def test_an_upload_is_projected_by_the_rooms_model(client):
    room = new_room(client, model="cats16")
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 120, 80)).save(buf, "PNG")
    with join(client, room) as ws:
        frame_of(ws)
        r = client.post(
            f"/api/rooms/{room['room']}/upload?cap={room['edit_token']}&method=encoder",
            content=buf.getvalue(),
            headers={"content-type": "image/png"},
        )
        assert r.status_code in (200, 202), r.text
        msgs = recv_until(ws, lambda m: m["t"] == "status" and m["status"] == "idle")
        assert [m for m in msgs if m["t"] == "frame"][-1]["w"] == 16
    target = client.get(f"/api/rooms/{room['room']}/upload.png?cap={room['view_token']}")
    assert Image.open(io.BytesIO(target.content)).size == (16, 16)


def test_unknown_models_are_refused_with_the_list(client):
    r = client.post("/api/rooms", json={"model": "ffhq1024"})
    assert r.status_code == 400
    assert "ffhq1024" in r.text and "cats16" in r.text
    assert client.post("/api/rooms", json={"model": 7}).status_code == 400
    assert client.get("/api/models/ffhq1024/samples.jpg").status_code == 404


def test_a_model_that_cannot_load_fails_its_room_and_no_other(client):
    bad = new_room(client, model="broken16")
    good = new_room(client)
    with join(client, bad) as ws, join(client, good, name="Bo") as ws2:
        err = recv_until(ws, lambda m: m["t"] == "error")[-1]
        assert "broken16 could not be loaded" in err["message"]
        assert frame_of(ws2)["w"] == RES
        ws2.send_bytes(encode({"t": "add_pair", "pair": "p1", "handle": [8.0, 8.0], "target": [12.0, 9.0]}))
        ws2.send_bytes(encode({"t": "set_params", "params": {"max_steps": 2}}))
        ws2.send_bytes(encode({"t": "start", "id": 1}))
        msgs = recv_until(ws2, lambda m: m["t"] == "status" and m["status"] == "idle")
        assert [m["step"] for m in msgs if m["t"] == "frame" and m["step"] > 0] == [1, 2]
    listed = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert "could not be loaded" in listed["broken16"]["error"] and not listed["broken16"]["loaded"]


def test_sample_grids_for_the_picker(client):
    r = client.get("/api/models/cats16/samples.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (192, 192)
    assert client.get("/api/models/broken16/samples.jpg").status_code == 503


def test_idle_models_unload_and_come_back(tmp_path, library):
    settings = make_settings(tmp_path, models_dir=library, model_idle_s=1)
    with TestClient(create_app(settings)) as c:
        room = new_room(c, model="cats16")
        with join(c, room) as ws:
            frame_of(ws)
        pool = c.app.state.livedrag.models
        assert pool.loaded("cats16") is not None
        health = c.get("/healthz").json()["models"]
        assert health["offered"] == 4 and set(health["loaded"]) == {pool.default, "cats16"}
        assert health["memory_mb"] > 0
        assert pool.sweep(time.monotonic() + 5) == []  # its room is still live
        c.delete(f"/api/rooms/{room['room']}?cap={room['edit_token']}")
        assert pool.sweep(time.monotonic() + 5) == ["cats16"]
        assert pool.loaded("cats16") is None and pool.loaded(pool.default) is not None
        again = new_room(c, model="cats16")
        with join(c, again) as ws:
            assert frame_of(ws)["w"] == 16
        assert pool.loads == 2 and pool.unloads == 1


def test_one_checkpoint_per_flag(tmp_path):
    """Repeated --checkpoint: the first is the default, the others are offered beside it."""
    from tests.server.live import tiny_checkpoint

    (tmp_path / "x").mkdir()
    extra = tiny_checkpoint(tmp_path / "x", res=16)
    settings = make_settings(tmp_path, extra_checkpoints=(str(extra),))
    with TestClient(create_app(settings)) as c:
        names = [m["name"] for m in c.get("/api/models").json()["models"]]
        assert names[0] == "tiny-32-skip" and "tiny-16-skip" in names
        room = new_room(c, model="tiny-16-skip")
        with join(c, room) as ws:
            assert frame_of(ws)["w"] == 16
