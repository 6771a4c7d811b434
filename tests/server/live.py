"""Helpers for the app tests: a tiny checkpoint, the Starlette test client with timeouts, a real
uvicorn server on an ephemeral loopback port, and a websockets client that speaks the protocol."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import msgpack
import torch
from starlette.exceptions import StarletteDeprecationWarning
from websockets.exceptions import ConnectionClosed

from server.core.protocol import PROTOCOL_VERSION, encode
from server.edge.app import create_app
from server.edge.config import Settings
from server.edge.serve import Server, uvicorn_config
from server.engine.checkpoint import save_generator
from server.engine.generator import Generator
from tests.conftest import tiny_config

with warnings.catch_warnings():  # the test client warns about its httpx flavour at import
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient, WebSocketTestSession  # noqa: F401

RES = 32
WAIT = 60.0  # a guard against hangs, not a performance bound: the test machine may be very busy


def tiny_checkpoint(directory: Path, res: int = RES) -> Path:
    torch.manual_seed(0)
    return save_generator(Generator(tiny_config(res)).eval(), directory / f"tiny{res}.safetensors")


def tiny_predictor(G: Generator, **defaults):
    """A small random predictor bundle that fits ``G`` (predict mode runs; it edits nothing useful);
    ``defaults`` become its recommended options (e.g. ``max_steps=2``)."""
    from tests.conftest import small_predictor

    return small_predictor(G, **defaults)


def make_settings(tmp_path: Path, **kw: Any) -> Settings:
    ckpt = tmp_path / f"tiny{RES}.safetensors"
    if not ckpt.exists():
        tiny_checkpoint(tmp_path)
    kw.setdefault("data_dir", tmp_path / "data")
    kw.setdefault("device", "cpu")
    # the tiny checkpoint has random weights: its features are nobody's face, and the lost-handle
    # rule (calibrated on faces) would end the long drags these tests stream frames from
    kw.setdefault("lost_ratio", 0.0)
    kw.setdefault("web_dir", tmp_path / "web")
    return Settings(checkpoint=str(ckpt), **kw)


def unpack(data: bytes) -> dict[str, Any]:
    return msgpack.unpackb(data, raw=False)


def hello(cap: str, name: str = "Ada", **kw: Any) -> bytes:
    return encode({"t": "hello", "v": PROTOCOL_VERSION, "cap": cap, "name": name, **kw})


# --- Starlette test client -------------------------------------------------------------------


def recv(ws: WebSocketTestSession, timeout: float = WAIT) -> dict[str, Any]:
    """The next ASGI message the app sent (its receive has no timeout of its own)."""

    async def get() -> dict[str, Any]:
        with anyio.fail_after(timeout):
            return await ws._send_rx.receive()

    return ws.portal.call(get)


def recv_msg(ws: WebSocketTestSession, timeout: float = WAIT) -> dict[str, Any]:
    """The next protocol message; raises AssertionError on a close (with its code)."""
    m = recv(ws, timeout)
    if m["type"] == "websocket.close":
        raise AssertionError(f"closed with {m.get('code')}")
    assert m["type"] == "websocket.send", m
    return unpack(m["bytes"])


def recv_until(ws: WebSocketTestSession, pred: Callable[[dict], bool], timeout: float = WAIT) -> list[dict]:
    """Messages up to and including the first one ``pred`` accepts (frames are acked)."""
    deadline = time.monotonic() + timeout
    out = []
    while True:
        m = recv_msg(ws, max(0.01, deadline - time.monotonic()))
        out.append(m)
        if m["t"] == "frame":
            ws.send_bytes(encode({"t": "ack", "seq": m["seq"]}))
        if pred(m):
            return out


def close_code(ws: WebSocketTestSession, timeout: float = WAIT) -> int:
    """Read until the app closes the connection; its close code."""
    deadline = time.monotonic() + timeout
    while True:
        m = recv(ws, max(0.01, deadline - time.monotonic()))
        if m["type"] == "websocket.close":
            return m.get("code", 1000)


# --- a real server -------------------------------------------------------------------------------


class LiveServer:
    """uvicorn on 127.0.0.1 and a free port, in a thread, with the livedrag app."""

    def __init__(self, settings: Settings, **app_kw: Any) -> None:
        self.settings = settings.replace(host="127.0.0.1", port=0, access_log=False, log_level="warning")
        self.app = create_app(self.settings, **app_kw)
        self.server = Server(uvicorn_config(self.app, self.settings))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.port = 0

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + WAIT
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=WAIT)
        assert not self.thread.is_alive(), "the server did not stop"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def state(self):
        return self.app.state.livedrag


class Client:
    """A protocol client over a real socket: keeps the room state from snapshot + ops, counts frames,
    acks them (unless ``ack=False``)."""

    def __init__(self, conn: Any, ack: bool = True) -> None:
        self.conn = conn
        self.ack = ack
        self.welcome: dict[str, Any] = {}
        self.state: dict[str, Any] = {}
        self.version = 0
        self.frames: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.next_id = 0

    @classmethod
    async def join(
        cls,
        url: str,
        cap: str,
        name: str = "Ada",
        ack: bool = True,
        hello_fields: dict[str, Any] | None = None,
        **kw: Any,
    ) -> Client:
        from websockets.asyncio.client import connect

        conn = await connect(url, proxy=None, compression=None, open_timeout=WAIT, **kw)
        c = cls(conn, ack)
        await conn.send(hello(cap, name, **(hello_fields or {})))
        c.welcome = await c.next("welcome")
        await c.next("snapshot")
        return c

    async def send(self, msg: dict[str, Any]) -> int:
        self.next_id += 1
        await self.conn.send(encode({**msg, "id": self.next_id}))
        return self.next_id

    async def recv(self, timeout: float = WAIT) -> dict[str, Any]:
        m = unpack(await asyncio.wait_for(self.conn.recv(), timeout))
        self.messages.append(m)
        t = m["t"]
        if t == "snapshot":
            self.state, self.version = m["state"], m["version"]
        elif t == "op":
            assert m["v"] == self.version + 1, f"version gap: {self.version} -> {m['v']}"
            self.version = m["v"]
            self.state.update(m["patch"])
        elif t == "frame":
            self.frames.append(m)
            if self.ack:
                with contextlib.suppress(ConnectionClosed):  # closing: later messages are still read
                    await self.conn.send(encode({"t": "ack", "seq": m["seq"]}))
        return m

    async def next(self, t: str, timeout: float = WAIT, **match: Any) -> dict[str, Any]:
        """Read until a message of type ``t`` (whose fields equal ``match``) arrives."""
        deadline = time.monotonic() + timeout
        while True:
            m = await self.recv(max(0.01, deadline - time.monotonic()))
            if m["t"] == t and all(m.get(k) == v for k, v in match.items()):
                return m

    async def drain(self, seconds: float) -> None:
        """Keep reading (and acking) for ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                await self.recv(left)
            except TimeoutError:
                return

    async def close(self) -> None:
        await self.conn.close()
