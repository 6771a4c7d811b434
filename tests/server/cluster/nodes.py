"""A cluster for the tests and the benchmark: real Redis, real PostgreSQL and N ``livedrag serve``
processes on loopback (the tiny 32 px checkpoint, one torch thread each), with helpers to create
rooms, find a room's owner and join through any node."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis

from tests.browser.live import LiveServer, free_port, make_checkpoint
from tests.server.live import WAIT, Client
from tests.services import RedisServer

NODE_ARGS = ("--max-viewers", "400")


class Cluster:
    """Redis + PostgreSQL + ``n`` nodes named A, B, C..."""

    def __init__(
        self,
        tmp: Path,
        redis_server: RedisServer,
        database_url: str,
        n: int = 3,
        max_fps: float = 15.0,
        checkpoint: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.tmp, self.redis, self.database_url = tmp, redis_server, database_url
        self.checkpoint = checkpoint or make_checkpoint(tmp)
        self.nodes: dict[str, LiveServer] = {}
        for i in range(n):
            name = chr(ord("A") + i)
            port = free_port()
            args = (
                "--redis", redis_server.url, "--database", database_url, "--node-id", name,
                "--advertise-url", f"http://127.0.0.1:{port}", "--lost-ratio", "0",
                *NODE_ARGS, *extra_args,
            )  # fmt: skip
            self.nodes[name] = LiveServer(
                self.checkpoint, tmp / f"data-{name}", port, max_fps, extra_args=args
            )

    def start(self) -> Cluster:
        for node in self.nodes.values():
            node.start(timeout=120)
        self.wait_nodes(set(self.nodes))
        return self

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def logs(self) -> str:
        return "\n".join(f"--- node {n} ---\n{s.log()}" for n, s in self.nodes.items())

    # --- what the cluster knows ---------------------------------------------------------------

    def r(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url, socket_timeout=5)

    def owner(self, room: str) -> str | None:
        with self.r() as r:
            v = r.get(f"ld:room:{room}:owner")
        return None if v is None else v.decode()

    def wait_owner(self, room: str, not_: str | None = None, timeout: float = WAIT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            owner = self.owner(room)
            if owner is not None and owner != not_:
                return owner
            time.sleep(0.05)
        raise AssertionError(f"room {room} has no owner (other than {not_}) after {timeout} s\n{self.logs()}")

    def wait_nodes(self, names: set[str], timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.r() as r:
                alive = {n for n in names if r.exists(f"ld:node:{n}")}
            if alive == names:
                return
            time.sleep(0.1)
        raise AssertionError(f"nodes {names - alive} never announced themselves")

    def health(self, name: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.nodes[name].url}/healthz", timeout=10) as r:
            return json.load(r)

    # --- rooms and clients --------------------------------------------------------------------

    def create_room(self, on: str, **body: Any) -> dict[str, Any]:
        room = self.nodes[on].create_room(**body)
        return room

    async def join(
        self, on: str, room: dict[str, Any], role: str = "editor", name: str = "Ada", **kw: Any
    ) -> Client:
        cap = room["edit_token" if role == "editor" else "view_token"]
        kw.setdefault("max_queue", 4096)
        url = f"ws://127.0.0.1:{self.nodes[on].port}/ws/{room['room']}"
        return await Client.join(url, cap, name, **kw)


async def until(pred: Any, timeout: float = WAIT, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(every)


class RawClient(Client):
    """A client that also keeps the raw bytes of every frame message, by seq (to compare what two
    nodes delivered byte for byte)."""

    def __init__(self, conn: Any, ack: bool = True) -> None:
        super().__init__(conn, ack)
        self.raw_frames: dict[int, bytes] = {}
        self.welcomes = 0

    async def recv(self, timeout: float = WAIT) -> dict[str, Any]:
        import msgpack
        from websockets.exceptions import ConnectionClosed

        from server.core.protocol import encode

        data = await asyncio.wait_for(self.conn.recv(), timeout)
        m = msgpack.unpackb(data, raw=False)
        self.messages.append(m)
        t = m["t"]
        if t == "welcome":
            self.welcomes += 1
            self.welcome = m
        elif t == "snapshot":
            self.state, self.version = m["state"], m["version"]
        elif t == "op":
            assert m["v"] == self.version + 1, f"version gap: {self.version} -> {m['v']}"
            self.version = m["v"]
            self.state.update(m["patch"])
        elif t == "frame":
            self.frames.append(m)
            self.raw_frames[m["seq"]] = data
            if self.ack:
                with contextlib.suppress(ConnectionClosed):
                    await self.conn.send(encode({"t": "ack", "seq": m["seq"]}))
        return m


async def join_raw(
    cluster: Cluster, on: str, room: dict[str, Any], role: str = "editor", name: str = "Ada", **hello: Any
) -> RawClient:
    """Join through node ``on`` with a RawClient (``hello``: extra hello fields, e.g. client_id)."""
    from websockets.asyncio.client import connect

    from tests.server.live import hello as hello_bytes

    cap = room["edit_token" if role == "editor" else "view_token"]
    url = f"ws://127.0.0.1:{cluster.nodes[on].port}/ws/{room['room']}"
    conn = await connect(url, proxy=None, compression=None, open_timeout=WAIT, max_queue=4096)
    c = RawClient(conn)
    await conn.send(hello_bytes(cap, name, **hello))
    await c.next("welcome")
    await c.next("snapshot")
    return c


async def resynced(c: RawClient, welcomes: int = 2, timeout: float = WAIT) -> None:
    """Read until the client got its ``welcomes``-th welcome and the snapshot after it."""
    deadline = time.monotonic() + timeout
    while c.welcomes < welcomes:
        await c.recv(max(0.01, deadline - time.monotonic()))
    await c.next("snapshot", timeout=max(0.01, deadline - time.monotonic()))
