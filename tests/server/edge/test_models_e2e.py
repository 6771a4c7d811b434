"""Bring your own model, end to end on the CPU (docs/models.md's walk-through): a tiny random
generator in an NVIDIA-style pickle is converted (`livedrag convert`, no code in the file runs),
trained by `livedrag train` (predictor and encoder), served from a model library next to the
default model by a real server, and a room created on it runs a predict drag and projects an
upload with its encoder."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image

from server.cli import main as cli_main
from tests.models.helpers import tiny_generator, write_nvidia_pickle
from tests.server.live import Client, LiveServer, make_settings


@pytest.fixture(scope="module")
def trained_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("byo")
    marker = d / "pickle-code-ran"
    pkl = write_nvidia_pickle(d / "network-snapshot.pkl", tiny_generator(seed=7, res=16), marker)
    ckpt = d / "mine.safetensors"
    assert cli_main(["convert", str(pkl), str(ckpt)]) == 0
    assert not marker.exists()
    lib = d / "models"
    argv = ["train", "--checkpoint", str(ckpt), "--out", str(lib / "mine"), "--preset", "tiny"]
    threads = torch.get_num_threads()
    try:
        assert cli_main([*argv, "--threads", "1", "--no-progress", "--licence", "CC0-1.0"]) == 0
    finally:
        torch.set_num_threads(threads)
    return lib


async def test_train_serve_room_predict_drag_and_encoder_upload(tmp_path, trained_library):
    settings = make_settings(tmp_path, models_dir=trained_library)
    with LiveServer(settings) as srv:
        async with httpx.AsyncClient(base_url=srv.http, timeout=60) as http:
            models = {m["name"]: m for m in (await http.get("/api/models")).json()["models"]}
            assert models["mine"]["licence"] == "CC0-1.0" and models["mine"]["resolution"] == 16
            assert models["mine"]["modes"] == ["optimize", "predict"]
            assert models["mine"]["projection"] == ["encoder", "optimize"]
            r = await http.post("/api/rooms", json={"model": "mine", "seed": 3})
            assert r.status_code == 201, r.text
            room = r.json()

            ada = await Client.join(f"{srv.ws}/ws/{room['room']}", room["edit_token"])
            first = await ada.next("frame")
            assert first["w"] == first["h"] == 16
            assert ada.state["image"]["model"] == "mine"
            await ada.send({"t": "add_pair", "pair": "p1", "handle": [4.0, 5.0], "target": [9.0, 7.0]})
            await ada.send({"t": "set_params", "params": {"mode": "predict", "max_steps": 6}})
            await ada.send({"t": "start"})
            end = await ada.next("op", op="finish")
            steps = [f for f in ada.frames if f.get("step", 0) > 0]
            assert steps and all(f["w"] == 16 for f in steps)
            assert end["patch"]["history"]["size"] == 2  # the drag's result is committed
            assert not [m for m in ada.messages if m["t"] == "error"]
            loaded = {m["name"]: m for m in (await http.get("/api/models")).json()["models"]}["mine"]
            assert loaded["loaded"] and loaded["modes"] == ["optimize", "predict"]

            buf = io.BytesIO()
            Image.new("RGB", (48, 40), (30, 160, 90)).save(buf, "PNG")
            await ada.next("status", status="idle")
            up = await http.post(
                f"/api/rooms/{room['room']}/upload",
                params={"cap": room["edit_token"], "method": "encoder"},
                content=buf.getvalue(),
                headers={"content-type": "image/png"},
            )
            assert up.status_code in (200, 202), up.text
            done = await ada.next("op", op="finish")
            assert done["patch"]["history"]["size"] == 3
            assert ada.state["image"]["seed"] is None and ada.state["image"]["model"] == "mine"
            png = await http.get(f"/api/rooms/{room['room']}/image.png", params={"cap": room["view_token"]})
            assert Image.open(io.BytesIO(png.content)).size == (16, 16)
            await ada.conn.close()
