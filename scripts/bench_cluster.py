"""Benchmark a livedrag cluster on one machine: Redis, PostgreSQL and three ``livedrag serve`` nodes
on loopback (the issue 19 goals).

Scenarios (``--scenario``, default all):

- ``spectators``: 1 room, its editor on a node that does not own it, ``--spectators`` (300)
  spread evenly over the three nodes; drags run back to back; the share of the room's frames each
  spectator received (goal >= 95%). Spectators acknowledge frames as the browser does.
- ``echo``: the editor (on a node that is not the owner) moves a target 10 times a second while a
  drag runs; the time from sending ``move_point`` to its ``op`` reaching a spectator on the third
  node: editor node -> Redis stream -> owner -> Redis pub/sub -> spectator node (goal p95 <= 30 ms).
- ``rooms``: 12 rooms created through the three nodes (placement spreads them), each with one
  editor on a node other than its owner, drags back to back: frames per second per room.
- ``failover``: a drag runs, the room's owner is killed (SIGKILL); the time until another node
  owns the room, until the relayed members got the room again, and until the first frame of the
  next drag (started as soon as the editor has the room back) (goal <= 10 s).

Tests' helpers start the servers (``tests/services.py``, ``tests/server/cluster/nodes.py``): this
script runs from a source checkout. The nodes serve a tiny 32 px generator with random weights
(``--model tiny``, the default: what the cluster costs, not the model) or the embedded default
model (``--model embedded``).

    python scripts/bench_cluster.py --seconds 10 --json docs/bench_cluster.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server.cluster.nodes import Cluster  # noqa: E402
from tests.services import PostgresServer, RedisServer  # noqa: E402

GOALS = {
    "spectators": "every spectator receives >= 95% of the room's frames",
    "echo": "cross-node op-to-echo p95 <= 30 ms",
    "failover": "<= 10 s from kill -9 of the owner to the first frame of the next drag",
}


EXTRA = ("--max-rooms", "100")  # each node's flags besides the cluster's


def pack(msg: dict[str, Any]) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, round(q * (len(v) - 1)))], 1)


@dataclass
class Peer:
    """One websocket client: acks frames, notes frame and op arrival times."""

    conn: Any
    node: str
    me: str = ""
    frames: list[tuple[float, int]] = field(default_factory=list)
    ops: dict[int, float] = field(default_factory=dict)  # ref of a move_point -> arrival
    statuses: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    welcomes: int = 0
    task: asyncio.Task[None] | None = None
    next_id: int = 0

    @classmethod
    async def join(cls, cluster: Cluster, node: str, room: dict[str, Any], role: str) -> Peer:
        url = f"ws://127.0.0.1:{cluster.nodes[node].port}/ws/{room['room']}"
        conn = await connect(url, proxy=None, compression=None, max_queue=None, open_timeout=60)
        p = cls(conn, node)
        cap = room["edit_token" if role == "editor" else "view_token"]
        await conn.send(pack({"t": "hello", "v": 1, "cap": cap, "name": role, "client_id": f"bench-{id(p)}"}))
        while True:
            m = msgpack.unpackb(await asyncio.wait_for(conn.recv(), 60), raw=False)
            if m["t"] == "welcome":
                p.me, p.welcomes = m["you"], 1
            if m["t"] == "snapshot":
                break
        p.task = asyncio.get_running_loop().create_task(p.read())
        return p

    async def read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for data in self.conn:
                now = time.perf_counter()
                m = msgpack.unpackb(data, raw=False)
                t = m["t"]
                if t == "frame":
                    self.frames.append((now, m["seq"]))
                    await self.conn.send(pack({"t": "ack", "seq": m["seq"]}))
                elif t == "op" and m["op"] == "move_point" and m.get("ref") is not None:
                    self.ops[m["ref"]] = now
                elif t == "status":
                    self.statuses.put_nowait(m["status"])
                elif t == "welcome":
                    self.welcomes += 1
                    self.me = m["you"]

    async def send(self, msg: dict[str, Any]) -> int:
        self.next_id += 1
        with contextlib.suppress(ConnectionClosed):
            await self.conn.send(pack({**msg, "id": self.next_id}))
        return self.next_id

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.conn.close()
        if self.task is not None:
            self.task.cancel()


async def drag_loop(ed: Peer, res: int, stop: asyncio.Event, moves: dict[int, float] | None = None) -> None:
    """A pair, then drags back to back (60 steps); with ``moves``, the target moves 10 times a second."""
    await ed.send(
        {"t": "add_pair", "pair": "p1", "handle": [0.3 * res, 0.3 * res], "target": [0.7 * res, 0.6 * res]}
    )
    await ed.send({"t": "set_params", "params": {"max_steps": 60, "stop_dist": 0.1}})
    await ed.send({"t": "start"})
    k = 0
    while not stop.is_set():
        await asyncio.sleep(0.1)
        while not ed.statuses.empty():
            if ed.statuses.get_nowait() == "idle" and not stop.is_set():
                await ed.send({"t": "start"})
        if moves is not None:
            k += 1
            target = [0.7 * res, (0.55 + 0.1 * (k % 2)) * res]
            ref = await ed.send({"t": "move_point", "pair": "p1", "which": "target", "pos": target})
            moves[ref] = time.perf_counter()
    await ed.send({"t": "stop"})


def others(cluster: Cluster, owner: str) -> list[str]:
    return sorted(set(cluster.nodes) - {owner})


def share(peers: list[Peer], t0: float, t1: float) -> tuple[int, list[float]]:
    seqs = {s for p in peers for (t, s) in p.frames if t0 <= t < t1}
    produced = (max(seqs) - min(seqs) + 1) if seqs else 0
    return produced, [
        sum(1 for t, _ in p.frames if t0 <= t < t1) / produced for p in peers
    ] if produced else []


async def spectators_and_echo(cluster: Cluster, n: int, seconds: float, res: int) -> dict[str, Any]:
    room = cluster.create_room("A", seed=1)
    owner = cluster.wait_owner(room["room"])
    b, c = others(cluster, owner)
    ed = await Peer.join(cluster, b, room, "editor")
    watcher = await Peer.join(cluster, c, room, "viewer")
    nodes = sorted(cluster.nodes)
    specs: list[Peer] = []
    for start in range(0, n, 20):
        specs += await asyncio.gather(
            *(Peer.join(cluster, nodes[i % 3], room, "viewer") for i in range(start, min(n, start + 20)))
        )
    stop, moves = asyncio.Event(), {}
    driver = asyncio.create_task(drag_loop(ed, res, stop, moves))
    await asyncio.sleep(2.0)
    moves.clear()
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    t1 = time.perf_counter()
    stop.set()
    await driver
    produced, shares = share([watcher, *specs], t0, t1)
    echo = [1000 * (watcher.ops[ref] - sent) for ref, sent in moves.items() if ref in watcher.ops]
    by_node = {
        node: [s for p, s in zip([watcher, *specs], shares, strict=True) if p.node == node] for node in nodes
    }
    for p in [ed, watcher, *specs]:
        await p.close()
    return {
        "owner": owner,
        "editor_node": b,
        "spectators": len(specs) + 1,
        "room_fps": round(produced / (t1 - t0), 1),
        "share_min": round(min(shares), 3) if shares else None,
        "share_mean": round(statistics.mean(shares), 3) if shares else None,
        "share_min_by_node": {k: round(min(v), 3) for k, v in by_node.items() if v},
        "echo_ms_p50": pct(echo, 0.5),
        "echo_ms_p95": pct(echo, 0.95),
        "echo_samples": len(echo),
        "echo_lost": len(moves) - len(echo),
    }


async def echo_only(cluster: Cluster, seconds: float, res: int) -> dict[str, Any]:
    row = await spectators_and_echo(cluster, 0, seconds, res)
    return {
        k: row[k] for k in ("owner", "editor_node", "room_fps", "echo_ms_p50", "echo_ms_p95", "echo_samples")
    }


async def many_rooms(cluster: Cluster, rooms_n: int, seconds: float, res: int) -> dict[str, Any]:
    nodes = sorted(cluster.nodes)
    rooms = [cluster.create_room(nodes[i % 3], seed=100 + i) for i in range(rooms_n)]
    owners = [cluster.wait_owner(r["room"]) for r in rooms]
    eds = []
    for i, (r, o) in enumerate(zip(rooms, owners, strict=True)):
        eds.append(await Peer.join(cluster, others(cluster, o)[i % 2], r, "editor"))
    stop = asyncio.Event()
    drivers = [asyncio.create_task(drag_loop(ed, res, stop)) for ed in eds]
    await asyncio.sleep(3.0)
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    t1 = time.perf_counter()
    stop.set()
    await asyncio.gather(*drivers)
    fps = []
    for ed in eds:
        got = [s for t, s in ed.frames if t0 <= t < t1]
        fps.append(round((max(got) - min(got) + 1) / (t1 - t0), 1) if got else 0.0)
        await ed.close()
    return {
        "rooms": rooms_n,
        "rooms_per_node": {n: owners.count(n) for n in nodes},
        "room_fps": fps,
        "room_fps_min": min(fps),
        "room_fps_mean": round(statistics.mean(fps), 1),
    }


async def failover(cluster: Cluster, res: int) -> dict[str, Any]:
    room = cluster.create_room("A", seed=7)
    owner = cluster.wait_owner(room["room"])
    b, c = others(cluster, owner)
    ed = await Peer.join(cluster, b, room, "editor")
    spec = await Peer.join(cluster, c, room, "viewer")
    await ed.send(
        {"t": "add_pair", "pair": "p1", "handle": [0.3 * res, 0.3 * res], "target": [0.7 * res, 0.6 * res]}
    )
    await ed.send({"t": "set_params", "params": {"max_steps": 10000, "stop_dist": 0.01}})
    await ed.send({"t": "start"})
    await asyncio.sleep(3.0)
    cluster.nodes[owner].kill()
    t0 = time.perf_counter()
    new_owner = await asyncio.to_thread(cluster.wait_owner, room["room"], owner, 30.0)
    t_owner = time.perf_counter() - t0
    while ed.welcomes < 2 or spec.welcomes < 2:
        await asyncio.sleep(0.01)
    t_back = time.perf_counter() - t0
    await asyncio.sleep(0.05)  # the snapshot follows the welcome
    await ed.send({"t": "set_params", "params": {"max_steps": 30}})
    seen = len(spec.frames)
    await ed.send({"t": "start"})
    while len(spec.frames) == seen:
        await asyncio.sleep(0.005)
    t_frame = spec.frames[seen][0] - t0
    for p in (ed, spec):
        await p.close()
    return {
        "killed": owner,
        "new_owner": new_owner,
        "to_new_owner_s": round(t_owner, 2),
        "to_members_resynced_s": round(t_back, 2),
        "to_first_frame_of_next_drag_s": round(t_frame, 2),
    }


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpu": model, "cores": len(os.sched_getaffinity(0)), "load_avg_before": os.getloadavg()}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="livedrag-bench-cluster-"))
    results: dict[str, Any] = {
        "machine": machine(),
        "model": args.model,
        "seconds": args.seconds,
        "max_fps": args.fps,
    }
    with RedisServer() as rs, PostgresServer() as pg:
        for name in args.scenario:
            ckpt = None
            if args.model == "tiny":
                from tests.browser.live import make_checkpoint

                ckpt = make_checkpoint(tmp)
            (tmp / name).mkdir(exist_ok=True)
            with redis.Redis.from_url(rs.url) as r:
                r.flushall()
            cluster = Cluster(
                tmp / name,
                rs,
                pg.url,
                n=3,
                max_fps=args.fps,
                checkpoint=ckpt or _embedded(),
                extra_args=EXTRA,
            )
            with cluster:
                res = cluster.health("A")["resolution"]
                t = time.perf_counter()
                if name == "spectators":
                    results[name] = await spectators_and_echo(cluster, args.spectators - 1, args.seconds, res)
                elif name == "echo":
                    results[name] = await echo_only(cluster, args.seconds, res)
                elif name == "rooms":
                    results[name] = await many_rooms(cluster, args.rooms, args.seconds, res)
                elif name == "failover":
                    results[name] = await failover(cluster, res)
                results[name]["wall_s"] = round(time.perf_counter() - t, 1)
            print(name, json.dumps(results[name]), flush=True)
    results["machine"]["load_avg_after"] = os.getloadavg()
    shutil.rmtree(tmp, ignore_errors=True)
    return results


def _embedded() -> Path:
    from server.engine.checkpoint import default_checkpoint_path

    path = default_checkpoint_path()
    if path is None:
        raise SystemExit("no embedded model in this checkout: use --model tiny")
    return Path(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", nargs="+", default=["spectators", "echo", "rooms", "failover"],
                   choices=["spectators", "echo", "rooms", "failover"])  # fmt: skip
    p.add_argument("--seconds", type=float, default=10.0, help="measurement window per scenario")
    p.add_argument("--spectators", type=int, default=300)
    p.add_argument("--rooms", type=int, default=12)
    p.add_argument("--fps", type=float, default=15.0, help="each node's --max-fps")
    p.add_argument("--model", choices=["tiny", "embedded"], default="tiny")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args(argv)
    results = asyncio.run(run(args))
    for name, goal in GOALS.items():
        if name in results:
            print(f"goal ({name}): {goal}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
