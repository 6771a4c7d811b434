"""What every resumable training run here shares: a chunk of steps that ends on the total, on wall
time, on a step count or on SIGTERM/Ctrl-C, with a kimg progress bar, interval checks, and a
checkpoint at the end whatever happened; and the CPU environment the training scripts run in."""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

# Read by glibc and libgomp at process start (docs/BENCHMARKS.md: up to 1.8x faster on the CPU,
# and OpenMP threads that spin on a shared, busy CPU slow everything down many times).
CPU_ENV = {
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": "68719476736",
    "MALLOC_TOP_PAD_": "1073741824",
    "OMP_WAIT_POLICY": "PASSIVE",
}


def save_atomically(state: dict, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary name, then rename: a crash never leaves half a checkpoint."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def reexec_with_cpu_env() -> None:
    """Re-execute this script once with CPU_ENV unless every variable is already set."""
    if any(k not in os.environ for k in CPU_ENV):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**CPU_ENV, **os.environ})


class ChunkedTrainer(Protocol):
    nimg: int
    step: int
    train_s: float
    _stop: threading.Event

    @property
    def kimg(self) -> float: ...
    def train_step(self) -> dict[str, float]: ...
    def request_stop(self) -> None: ...
    def save_checkpoint(self) -> Any: ...


# after_step(stats, bar, crossed): crossed(every_kimg) says whether this step passed a
# multiple of every_kimg (or the end of the run).
AfterStep = Callable[[dict[str, float], tqdm, Callable[[float], bool]], None]


def run_chunk(
    t: ChunkedTrainer,
    chunk: dict,
    total_kimg: float,
    minutes: float | None,
    max_steps: int | None,
    progress: bool,
    after_step: AfterStep,
    stop_kimg: float | None = None,
) -> str:
    """Train ``t`` until ``total_kimg``, ``minutes``, ``max_steps``, ``stop_kimg`` (an earlier end
    for this chunk that leaves the schedule, set by ``total_kimg``, alone) or a stop request;
    always checkpoint at the end. Returns "done", "time", "steps", "kimg" or "stopped"."""
    deadline = time.perf_counter() + minutes * 60 if minutes is not None else math.inf
    total = int(total_kimg * 1000)
    end = total if stop_kimg is None else min(total, round(stop_kimg * 1000))
    old = {}
    if threading.current_thread() is threading.main_thread():
        old = {s: signal.signal(s, lambda *_: t.request_stop()) for s in (signal.SIGTERM, signal.SIGINT)}
    bar = tqdm(
        total=round(total_kimg, 3),
        initial=round(t.kimg, 3),
        unit="kimg",
        dynamic_ncols=True,
        disable=not progress,
        bar_format="{l_bar}{bar}| {n:.2f}/{total:g} kimg [{elapsed}<{remaining}{postfix}]",
    )
    reason, steps = "done", 0
    try:
        while t.nimg < end:
            if t._stop.is_set():
                reason = "stopped"
                break
            if time.perf_counter() >= deadline:
                reason = "time"
                break
            if max_steps is not None and steps >= max_steps:
                reason = "steps"
                break
            prev = t.nimg
            t0 = time.perf_counter()
            stats = t.train_step()
            dt = time.perf_counter() - t0
            t.train_s += dt
            chunk["seconds"] = round(chunk["seconds"] + dt, 3)
            steps += 1
            if not all(math.isfinite(v) for v in stats.values()):
                raise FloatingPointError(f"non-finite loss at step {t.step}: {stats}")
            bar.update(min(t.kimg, bar.total) - bar.n)

            def crossed(every_kimg: float, prev: int = prev) -> bool:
                every = max(int(every_kimg * 1000), 1)
                return t.nimg // every > prev // every or t.nimg >= total

            after_step(stats, bar, crossed)
        if reason == "done" and t.nimg < total:
            reason = "kimg"
    finally:
        bar.close()
        for s, h in old.items():
            signal.signal(s, h)
        chunk["end_kimg"] = round(t.kimg, 3)
        t.save_checkpoint()
    return reason
