"""Benchmark the livedrag server over real websockets: frame rates, op echo latency, start latency, CPU.

Starts ``livedrag serve`` on a loopback port (a subprocess), creates rooms over HTTP, connects
websocket clients (editors and spectators) that acknowledge every frame like the browser does,
starts a drag in each room (restarted whenever it finishes, so frames keep flowing) and measures
over a fixed window:

- frames per second produced per room and received per client, and the share of a room's frames
  each client received (spectators on a latest-frame-wins link may skip frames);
- op echo latency: one editor moves a target 10 times a second while the drag runs; the time from
  sending ``move_point`` to its ``op`` arriving at another client of the room (p50 / p95);
- start to first frame: from sending ``start`` to the drag's first frame at that editor;
- the server process's CPU (percent of one core) and resident memory (psutil if installed, else
  /proc).

Scenarios (``--scenario``, default all three): ``1room`` (1 room, 2 editors), ``4rooms`` (4 rooms,
2 editors each), ``100spectators`` (1 room, 2 editors, 100 spectators); or a custom one with
``--rooms/--editors/--spectators``. Without ``--checkpoint`` and without the embedded default model,
the benchmark uses a 64 px generator with channel_base 2048 / channel_max 128 and random weights
(the default model's architecture; speed does not depend on the weights) and says so.

    python scripts/bench_server.py --seconds 10 --json docs/bench_server.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgpack
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOALS = {  # scenario -> what it must reach (docs/BENCHMARKS.md; the 128 px default model's goals)
    "1room": "every client >= 25 fps",
    "4rooms": "every client >= 10 fps",
    "100spectators": "every spectator receives >= 90% of the room's frames",
    "echo": "op echo p95 < 30 ms while a drag runs",
}


@dataclass(frozen=True)
class Scenario:
    name: str
    rooms: int
    editors: int
    spectators: int


PRESETS = {
    "1room": Scenario("1room", 1, 2, 0),
    "4rooms": Scenario("4rooms", 4, 2, 0),
    "100spectators": Scenario("100spectators", 1, 2, 100),
}


def pack(msg: dict[str, Any]) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


# --- the server process ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_checkpoint(directory: Path) -> Path:
    """The default model's architecture (64 px, 2048/128, w 256) with random weights."""
    import torch

    from server.engine.checkpoint import save_generator
    from server.engine.generator import Generator, GeneratorConfig

    torch.manual_seed(0)
    cfg = GeneratorConfig(
        z_dim=256,
        w_dim=256,
        img_resolution=64,
        channel_base=2048,
        channel_max=128,
        mapping_layers=4,
        name="random-64",
    )
    return save_generator(Generator(cfg).eval(), directory / "random-64.safetensors")


class ServerProcess:
    def __init__(self, checkpoint: Path | None, workdir: Path, extra: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "server.log"
        cmd = [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--data-dir", str(workdir / "data"), "--no-access-log", "--log-level", "warning"]
        if checkpoint is not None:
            cmd += ["--checkpoint", str(checkpoint)]
        cmd += extra
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        self.cpu = ProcessStats(self.proc.pid)

    def wait_ready(self, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: see {self.log}:\n{self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                health = httpx.get(self.url + "/healthz", timeout=2)
                if health.status_code == 200 and health.json().get("warm"):  # warm-up step done
                    return httpx.get(self.url + "/api/info", timeout=2).json()
            time.sleep(0.2)
        raise RuntimeError(f"server did not start in {timeout} s (log: {self.log})")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class ProcessStats:
    """CPU seconds and resident memory of a process (psutil when available, else /proc)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            import psutil

            self._ps = psutil.Process(pid)
        except ImportError:
            self._ps = None

    def cpu_seconds(self) -> float:
        if self._ps is not None:
            t = self._ps.cpu_times()
            return t.user + t.system
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        if self._ps is not None:
            return self._ps.memory_info().rss / 2**20
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


# --- clients --------------------------------------------------------------------------------------


@dataclass
class ClientStats:
    role: str
    frames: list[tuple[float, int]] = field(default_factory=list)  # (time, seq)
    echo_ms: list[float] = field(default_factory=list)
    start_ms: list[float] = field(default_factory=list)


class BenchClient:
    def __init__(self, room: RoomRun, role: str, conn: Any) -> None:
        self.room, self.role, self.conn = room, role, conn
        self.stats = ClientStats(role)
        self.me = ""
        self.task: asyncio.Task[None] | None = None

    @classmethod
    async def join(cls, server: str, room: RoomRun, role: str, name: str) -> BenchClient:
        ws = server.replace("http://", "ws://") + f"/ws/{room.id}"
        conn = await connect(ws, proxy=None, compression=None, max_queue=None, open_timeout=30)
        c = cls(room, role, conn)
        cap = room.tokens["edit_token" if role == "editor" else "view_token"]
        await conn.send(pack({"t": "hello", "v": 1, "cap": cap, "name": name}))
        while True:
            m = msgpack.unpackb(await conn.recv(), raw=False)
            if m["t"] == "welcome":
                c.me = m["you"]
            if m["t"] == "snapshot":
                break
        c.task = asyncio.get_running_loop().create_task(c.read())
        return c

    async def read(self) -> None:
        room = self.room
        try:
            async for data in self.conn:
                now = time.perf_counter()
                m = msgpack.unpackb(data, raw=False)
                t = m["t"]
                if t == "frame":
                    self.stats.frames.append((now, m["seq"]))
                    await self.conn.send(pack({"t": "ack", "seq": m["seq"]}))
                    mine = self is room.driver and room.start_sent is not None
                    if mine and m["drag"] == room.drag and m["step"] >= 1:
                        self.stats.start_ms.append(1000 * (now - room.start_sent))
                        room.start_sent = None
                elif t == "op":
                    if m["by"] == room.driver_id and m["ref"] in room.moves and self is room.echo_at:
                        self.stats.echo_ms.append(1000 * (now - room.moves.pop(m["ref"])))
                    if m["op"] == "start" and m["by"] == self.me:
                        room.drag = m["patch"]["drag"]
                elif t == "status" and m["status"] == "idle" and self is room.driver:
                    room.finished.set()
        except ConnectionClosed:
            pass

    async def send(self, msg: dict[str, Any]) -> None:
        await self.conn.send(pack(msg))


@dataclass
class RoomRun:
    id: str
    tokens: dict[str, str]
    clients: list[BenchClient] = field(default_factory=list)
    driver: BenchClient | None = None
    driver_id: str = ""
    echo_at: BenchClient | None = None
    moves: dict[int, float] = field(default_factory=dict)
    start_sent: float | None = None
    drag: int = -1
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    next_id: int = 0

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id


async def drive(room: RoomRun, res: int, stop: asyncio.Event) -> None:
    """Editor 0: a pair, then drags back to back; moves the target 10 times a second."""
    d = room.driver
    assert d is not None
    await d.send({"t": "add_pair", "id": room.new_id(), "pair": "p1", "handle": [0.3 * res, 0.3 * res],
                  "target": [0.7 * res, 0.6 * res]})  # fmt: skip
    await d.send({"t": "set_params", "id": room.new_id(), "params": {"max_steps": 60, "stop_dist": 0.1}})

    async def start() -> None:
        room.finished.clear()
        room.start_sent = time.perf_counter()
        await d.send({"t": "start", "id": room.new_id()})

    await start()
    k = 0
    while not stop.is_set():
        await asyncio.sleep(0.1)
        if room.finished.is_set():
            await start()
            continue
        k += 1
        ref = room.new_id()
        room.moves[ref] = time.perf_counter()
        target = [0.7 * res, (0.55 + 0.1 * (k % 2)) * res]
        await d.send({"t": "move_point", "id": ref, "pair": "p1", "which": "target", "pos": target})
    await d.send({"t": "stop", "id": room.new_id()})


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, round(q * (len(v) - 1)))]


async def run_scenario(server: ServerProcess, sc: Scenario, seconds: float, res: int) -> dict[str, Any]:
    rooms: list[RoomRun] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for i in range(sc.rooms):
            r = (await http.post("/api/rooms", json={"seed": 100 + i})).json()
            rooms.append(RoomRun(r["room"], r))
    for room in rooms:
        for e in range(sc.editors):
            room.clients.append(await BenchClient.join(server.url, room, "editor", f"Editor {e}"))
        for start in range(0, sc.spectators, 10):
            batch = range(start, min(sc.spectators, start + 10))
            room.clients += await asyncio.gather(
                *(BenchClient.join(server.url, room, "viewer", f"Viewer {s}") for s in batch)
            )
        room.driver = room.clients[0]
        room.driver_id = room.driver.me
        room.echo_at = room.clients[1] if len(room.clients) > 1 else room.clients[0]
    stop = asyncio.Event()
    drivers = [asyncio.create_task(drive(room, res, stop)) for room in rooms]
    await asyncio.sleep(2.0)  # warm-up: drags running, sessions created
    for room in rooms:  # measure only inside the window
        for c in room.clients:
            c.stats.echo_ms.clear()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        eng0 = (await http.get("/healthz")).json()["engine"]
        cpu0, t0 = server.cpu.cpu_seconds(), time.perf_counter()
        bench0 = time.process_time()
        await asyncio.sleep(seconds)
        t1, cpu1 = time.perf_counter(), server.cpu.cpu_seconds()
        bench1 = time.process_time()
        eng1 = (await http.get("/healthz")).json()["engine"]
    steps, ticks = eng1["steps"] - eng0["steps"], eng1["ticks"] - eng0["ticks"]
    engine_cpu = eng1["cpu_s"] - eng0["cpu_s"]
    rss = server.cpu.rss_mb()
    stop.set()
    await asyncio.gather(*drivers)
    echo = [ms for room in rooms for c in room.clients for ms in c.stats.echo_ms]
    starts = [ms for room in rooms for ms in (room.driver.stats.start_ms if room.driver else [])]
    room_rows, client_fps, ratios = [], [], []
    for room in rooms:
        seqs = {seq for c in room.clients for (t, seq) in c.stats.frames if t0 <= t < t1}
        produced = (max(seqs) - min(seqs) + 1) if seqs else 0
        per_client = []
        for c in room.clients:
            got = sum(1 for (t, _) in c.stats.frames if t0 <= t < t1)
            per_client.append(got / (t1 - t0))
            if c.role == "viewer" and produced:
                ratios.append(got / produced)
        client_fps += per_client
        room_rows.append({"room_fps": produced / (t1 - t0), "client_fps_min": min(per_client)})
    for room in rooms:
        for c in room.clients:
            await c.conn.close()
            if c.task is not None:
                c.task.cancel()
    return {
        "scenario": asdict(sc),
        "seconds": round(t1 - t0, 2),
        "room_fps": [round(r["room_fps"], 1) for r in room_rows],
        "client_fps_min": round(min(client_fps), 1),
        "client_fps_mean": round(statistics.mean(client_fps), 1),
        "spectator_share_min": round(min(ratios), 3) if ratios else None,
        "echo_ms_p50": _r(pct(echo, 0.5)),
        "echo_ms_p95": _r(pct(echo, 0.95)),
        "echo_samples": len(echo),
        "start_to_frame_ms_p50": _r(pct(starts, 0.5)),
        "start_samples": len(starts),
        "server_cpu_percent": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
        "engine_cpu_percent": round(100 * engine_cpu / (t1 - t0), 1),
        "loop_cpu_percent": round(100 * (cpu1 - cpu0 - engine_cpu) / (t1 - t0), 1),
        "engine_cpu_ms_per_step": round(1000 * engine_cpu / steps, 2) if steps else None,
        "engine_cpu_ms_per_tick": round(1000 * engine_cpu / ticks, 2) if ticks else None,
        "steps_per_tick": round(steps / ticks, 2) if ticks else None,
        "server_rss_mb": round(rss, 1),
        "bench_clients_cpu_percent": round(100 * (bench1 - bench0) / (t1 - t0), 1),
    }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def verdicts(row: dict[str, Any]) -> list[str]:
    name = row["scenario"]["name"]
    out = []
    if name == "1room":
        out.append(f"1 room >= 25 fps to every client: {'PASS' if row['client_fps_min'] >= 25 else 'MISS'}")
    if name == "4rooms":
        out.append(f"4 rooms >= 10 fps each: {'PASS' if row['client_fps_min'] >= 10 else 'MISS'}")
    if name == "100spectators" and row["spectator_share_min"] is not None:
        ok = row["spectator_share_min"] >= 0.9
        out.append(f"100 spectators get >= 90% of frames: {'PASS' if ok else 'MISS'}")
    if row["echo_ms_p95"] is not None:
        out.append(f"echo p95 < 30 ms: {'PASS' if row['echo_ms_p95'] < 30 else 'MISS'}")
    return out


def machine() -> dict[str, Any]:
    model = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {
        "cpu": model,
        "cores": cores,
        "python": platform.python_version(),
        "load_avg_after": os.getloadavg(),
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'scenario':<15}{'R/E/S':>10}{'room fps':>12}{'client fps min/mean':>21}{'spect share':>12}"
        f"{'echo p50/p95 ms':>17}{'start->frame':>14}{'CPU% eng/loop':>15}{'eng ms/tick':>12}{'RSS MB':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        sc = r["scenario"]
        share = "-" if r["spectator_share_min"] is None else f"{100 * r['spectator_share_min']:.0f}%"
        print(
            f"{sc['name']:<15}{sc['rooms']}/{sc['editors']}/{sc['spectators']:>3}".ljust(25)
            + f"{min(r['room_fps']):>12.1f}"
            + f"{r['client_fps_min']:>11.1f} / {r['client_fps_mean']:<7.1f}"
            + f"{share:>12}"
            + f"{r['echo_ms_p50'] or 0:>9.1f} / {r['echo_ms_p95'] or 0:<5.1f}"
            + f"{r['start_to_frame_ms_p50'] or 0:>12.1f}ms"
            + f"{r['engine_cpu_percent']:>9.0f} / {r['loop_cpu_percent']:<4.0f}"
            + f"{r['engine_cpu_ms_per_tick'] or 0:>12.1f}{r['server_rss_mb']:>8.0f}"
        )
        for v in verdicts(r):
            print(f"{'':<15}{v}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", action="append", choices=sorted(PRESETS), help="preset(s); default all")
    p.add_argument("--rooms", type=int, default=None, help="custom scenario: rooms")
    p.add_argument("--editors", type=int, default=2, help="custom scenario: editors per room")
    p.add_argument("--spectators", type=int, default=0, help="custom scenario: spectators per room")
    p.add_argument("--seconds", type=float, default=10.0, help="measurement window per scenario")
    p.add_argument(
        "--checkpoint", type=Path, default=None, help="generator (default: embedded, else random 64 px)"
    )
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument(
        "--server-arg", action="append", default=[], help="extra `livedrag serve` flag (repeatable)"
    )
    args = p.parse_args(argv)

    if args.rooms is not None:
        scenarios = [Scenario("custom", args.rooms, args.editors, args.spectators)]
    else:
        scenarios = [PRESETS[n] for n in (args.scenario or PRESETS)]
    from server.engine.checkpoint import default_checkpoint_path

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="livedrag-bench-") as tmp:
        work = Path(tmp)
        checkpoint, model_note = args.checkpoint, None
        if checkpoint is None and default_checkpoint_path() is None:
            checkpoint = random_checkpoint(work)
            model_note = "random weights, 64 px, channel_base 2048 / channel_max 128 (no default model yet)"
            print(f"no embedded default model: benchmarking a generator with {model_note}")
        server = ServerProcess(checkpoint, work, args.server_arg)
        try:
            info = server.wait_ready()
            print(f"server up: model {info['model']} ({info['resolution']} px), modes {info['modes']}")
            rows = []
            for sc in scenarios:
                who = f"{sc.rooms} room(s), {sc.editors} editors, {sc.spectators} spectators"
                print(f"running {sc.name}: {who} ...")
                rows.append(asyncio.run(run_scenario(server, sc, args.seconds, info["resolution"])))
        finally:
            server.stop()
    print()
    print_table(rows)
    result = {
        "machine": {**machine(), "load_avg_before": load_before},
        "model": info["model"],
        "resolution": info["resolution"],
        "model_note": model_note,
        "server_args": args.server_arg,
        "seconds": args.seconds,
        "results": rows,
        "goals": GOALS,
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
