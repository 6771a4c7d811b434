"""Support code for the browser tests and the screenshot script: a tiny generator checkpoint, a real
``livedrag serve`` subprocess on a loopback port (restartable on the same port and data dir), and
Debian's Chromium driven by Playwright."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("LIVEDRAG_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def make_checkpoint(directory: Path, res: int = 32, seed: int = 0, **overrides: Any) -> Path:
    """A small random StyleGAN2 generator saved as a native checkpoint (milliseconds per step)."""
    import torch

    from server.engine.checkpoint import save_generator
    from server.engine.generator import Generator, GeneratorConfig
    from tests.conftest import tiny_config

    cfg = tiny_config(res)
    if overrides:
        cfg = GeneratorConfig.from_dict({**cfg.to_dict(), **overrides})
    torch.manual_seed(seed)
    return save_generator(Generator(cfg).eval(), directory / f"gen{res}.safetensors")


def make_predictor(checkpoint: Path, directory: Path, **defaults: Any) -> Path:
    """A small random predictor file for ``checkpoint`` (predict mode runs; it edits nothing
    useful); ``defaults`` are its recommended options, e.g. ``max_steps=3``."""
    from server.engine.checkpoint import load_generator
    from server.engine.predictor_io import save_predictor
    from tests.conftest import small_predictor

    bundle = small_predictor(load_generator(checkpoint), **defaults)
    return save_predictor(bundle, directory / "predictor.safetensors")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """``python -m server.cli serve`` on 127.0.0.1:port with its own data dir."""

    def __init__(
        self,
        checkpoint: Path,
        data_dir: Path,
        port: int | None = None,
        max_fps: float = 15.0,
        predictor: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ):
        self.checkpoint = checkpoint
        self.predictor = predictor
        self.extra_args = tuple(extra_args)
        self.data_dir = data_dir
        self.port = port or free_port()
        self.max_fps = max_fps
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        cmd = [
            sys.executable, "-m", "server.cli", "serve",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--checkpoint", str(self.checkpoint), "--data-dir", str(self.data_dir),
            "--device", "cpu", "--torch-threads", "1", "--max-fps", str(self.max_fps),
            "--no-access-log", "--log-level", "info",
        ]  # fmt: skip
        if self.predictor is not None:
            cmd += ["--predictor", str(self.predictor)]
        cmd += list(self.extra_args)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        log = open(self.log_path, "ab")  # noqa: SIM115 (kept open for the process's lifetime)
        try:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"livedrag serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as r:
                    if json.load(r).get("ok"):
                        return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"livedrag serve did not come up in {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 20.0) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGINT)  # uvicorn drains: commits drags, closes sockets with 4012
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)

    def kill(self) -> None:
        """Kill the server without letting it drain (SIGKILL: a crash; the data dir stays as it was)."""
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def create_room(self, **body: Any) -> dict[str, Any]:
        req = urllib.request.Request(
            f"{self.url}/api/rooms",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Origin": self.url},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def __enter__(self) -> LiveServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def edit_path(room: dict[str, Any]) -> str:
    return f"/r/{room['room']}#edit={room['edit_token']}&view={room['view_token']}"


def view_path(room: dict[str, Any]) -> str:
    return f"/r/{room['room']}#view={room['view_token']}"


def launch_chromium(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
