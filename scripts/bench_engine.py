#!/usr/bin/env python3
"""Engine speed: generator forward and DragGAN step times for the model sizes livedrag cares about.

    python scripts/bench_engine.py [--json out/bench_engine.json] [--devices cpu,cuda] [--quick]

For each configuration and device it times, after a warm-up, in a fresh subprocess (so one
run's allocator history and peak memory do not leak into the next):
  * forward: ``G.synthesis(ws)`` without grad (the image only), ms median and p90;
  * step: ``DragSession.step()`` with one handle (forward with features, tracking, motion
    supervision, backward, Adam, frame to uint8 on the host), ms median and p90;
  * batch4: ``step_batch`` of 4 sessions in one pass, ms per call (and per session);
  * predict: one predictor tick (``PredictSession.step()``: predictor and regularizer forward,
    synthesis with features, point tracking) with a random predictor of the shipped architecture;
  * jpeg: encoding the frame at quality 85;
  * peak memory: ``torch.cuda.max_memory_allocated`` on CUDA, peak RSS of the process on the CPU;
  * cpu: process CPU time per repetition (all threads together): on a busy shared machine the
    wall times grow with the load, the CPU time much less.
Weights are random: timing does not depend on them. CPU runs use ``--threads`` torch threads (2).
Prints a table and writes JSON. Set the glibc malloc variables (the Makefile
exports them); the script says whether they are set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (GeneratorConfig fields, repetitions scale). Small models use z/w 256 (the mapping
# network is not timed; w_dim only sizes the affine layers).
CONFIGS: dict[str, dict] = {
    "tiny-32": dict(
        z_dim=32, w_dim=32, img_resolution=32, channel_base=512, channel_max=32, mapping_layers=2
    ),
    "64px-1024/64": dict(
        z_dim=256, w_dim=256, img_resolution=64, channel_base=1024, channel_max=64, mapping_layers=4
    ),
    "64px-2048/128": dict(
        z_dim=256, w_dim=256, img_resolution=64, channel_base=2048, channel_max=128, mapping_layers=4
    ),
    "128px-2048/128": dict(
        z_dim=256, w_dim=256, img_resolution=128, channel_base=2048, channel_max=128, mapping_layers=4
    ),
    "128px-4096/256": dict(
        z_dim=256, w_dim=256, img_resolution=128, channel_base=4096, channel_max=256, mapping_layers=4
    ),
    "ffhq-512": dict(
        z_dim=512, w_dim=512, img_resolution=512, channel_base=32768, channel_max=512, mapping_layers=8
    ),
}
HEAVY = {"ffhq-512"}  # fewer repetitions on the CPU
MALLOC_VARS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
GOALS = {  # issue 2
    ("cpu", "128px-2048/128", "step_ms"): 35.0,
    ("cpu", "ffhq-512", "forward_ms"): 1500.0,
    ("cuda", "ffhq-512", "forward_ms"): 10.0,
    ("cuda", "ffhq-512", "step_ms"): 30.0,
}


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(ms: list[float]) -> dict:
    return {"median": statistics.median(ms), "p90": percentile(ms, 0.9), "n": len(ms)}


# -- child: one configuration on one device ------------------------------------------------------------


def run_child(name: str, device: str, threads: int, warmup: int, reps: int, batch: bool) -> dict:
    import resource

    import torch

    from server.engine.drag import DragSession, step_batch
    from server.engine.drag_options import DragOptions
    from server.engine.generator import Generator, GeneratorConfig
    from server.engine.media import encode_jpeg

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = GeneratorConfig(name=name, **CONFIGS[name])
    dev = torch.device(device)
    G = Generator(cfg).eval().requires_grad_(False).to(dev)
    res = cfg.img_resolution
    cuda = dev.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    def bar(total: int, desc: str):
        from tqdm import tqdm

        return tqdm(
            total=total,
            desc=f"{name} {device} {desc}",
            leave=False,
            position=1,
            disable=not sys.stderr.isatty(),
        )

    def session(seed: int) -> DragSession:
        # one handle, far from its target so the session never finishes during the benchmark
        h, t = (0.25 * res, 0.5 * res), (0.75 * res, 0.5 * res)
        return DragSession.from_seed(G, seed, [h], [t], options=DragOptions(max_steps=10**6))

    out: dict = {
        "config": name,
        "device": device,
        "resolution": res,
        "threads": threads if not cuda else None,
    }
    out["channels"] = {r: cfg.channels(r) for r in cfg.block_resolutions}
    out["feature_block"] = G.default_feature_block()
    with torch.no_grad():
        ws = G.ws_from_seed(0)
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)

    def timed(key: str, one) -> None:
        """``warmup + reps`` calls of ``one(i)``; ms per call (wall and process CPU) into ``out``."""
        times, cpu = [], []
        b = bar(warmup + reps, key)
        for i in range(warmup + reps):
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            one(i)
            sync()
            if i >= warmup:
                times.append(1000 * (time.perf_counter() - t0))
                cpu.append(1000 * (time.process_time() - c0))
            b.update()
        b.close()
        out[f"{key}_ms"] = summary(times)
        out[f"{key}_cpu_ms"] = summary(cpu)

    with torch.no_grad():
        timed("forward", lambda i: G.synthesis(ws))

    # step (a finished session is replaced; the last frame is kept for the JPEG timing)
    live = {"drag": session(0), "frame": None}

    def drag_step(i: int) -> None:
        if live["drag"].done:
            live["drag"] = session(i)
        live["frame"] = live["drag"].step().frame

    timed("step", drag_step)
    frame = live["frame"]

    # predictor tick: one PredictSession step (predictor + regularizer forward, synthesis with
    # features, point tracking) with a random predictor of the shipped architecture for this G
    live["predict"] = predict_session(G, res, 0)

    def predict_step(i: int) -> None:
        if live["predict"].done:
            live["predict"] = predict_session(G, res, i + 1)
        live["predict"].step()

    with torch.no_grad():
        timed("predict", predict_step)
    t0 = time.perf_counter()
    for _ in range(20):
        encode_jpeg(frame, 85)
    out["jpeg_ms"] = 1000 * (time.perf_counter() - t0) / 20

    # four sessions in one pass
    if batch:
        sessions = [session(k) for k in range(4)]
        times = []
        b = bar(warmup + reps, "batch4")
        for i in range(warmup + reps):
            sessions = [x if not x.done else session(10 + i) for x in sessions]
            t0 = time.perf_counter()
            step_batch(sessions)
            if i >= warmup:
                times.append(1000 * (time.perf_counter() - t0))
            b.update()
        b.close()
        out["batch4_ms"] = summary(times)
    if cuda:
        out["peak_mem_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
        out["peak_mem_kind"] = "cuda max_memory_allocated"
    else:
        out["peak_mem_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out["peak_mem_kind"] = "process peak RSS"
    return out


def predict_session(G, res: int, seed: int):
    """A predict session on ``G`` with a random predictor bundle of the shipped architecture
    (``PredictorConfig.for_generator``, the default regularizer): timing does not depend on weights."""
    import torch

    from server.engine.predict_options import PredictOptions
    from server.engine.predict_session import PredictSession
    from server.engine.predictor import LatentPredictor, PredictorConfig, latent_stats
    from server.engine.predictor_io import GeneratorIdentity, PredictorBundle
    from server.engine.regularizer import LatentRegularizer, RegularizerConfig

    key = id(G)
    bundle = _BUNDLES.get(key)
    if bundle is None:
        dev = G.mapping.w_avg.device
        pcfg = PredictorConfig.for_generator(G)
        P = LatentPredictor(pcfg)
        R = LatentRegularizer(RegularizerConfig(w_dim=G.w_dim, n_rows=pcfg.n_rows))
        mean, std = latent_stats(G, n=256)
        for m in (P, R):
            m.w_avg.copy_(mean.cpu())
            m.w_std.copy_(std.cpu())
        bundle = _BUNDLES[key] = PredictorBundle(P, R, GeneratorIdentity.of(G)).to(dev).eval()
    with torch.no_grad():
        ws = G.ws_from_seed(seed)
    h, t = (0.25 * res, 0.5 * res), (0.75 * res, 0.5 * res)
    opts = PredictOptions.recommended(bundle, max_steps=10**6)
    return PredictSession(G, ws, [h], [t], options=opts, model=bundle)


_BUNDLES: dict = {}


# -- parent: machine facts, jobs, table ------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    import torch

    info = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_start": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "env": {k: os.environ.get(k) for k in (*MALLOC_VARS, "OMP_NUM_THREADS", "OMP_WAIT_POLICY")},
    }
    return info


def fmt(d: dict | None, key: str = "median") -> str:
    return "-" if d is None else f"{d[key]:.1f}"


def table(rows: list[dict]) -> str:
    head = (
        f"{'config':<16} {'device':<10} {'fwd med':>8} {'fwd p90':>8} {'step med':>9} {'step p90':>9} "
        f"{'batch4':>8} {'/sess':>6} {'predict':>8} {'jpeg':>5} {'peak MB':>8} {'fwd cpu':>8} {'step cpu':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['config']:<16} {r['device']:<10} error: {r['error']}")
            continue
        dev = r["device"] + (f"/{r['threads']}t" if r.get("threads") else "")
        b4 = r.get("batch4_ms")
        per = "-" if b4 is None else f"{b4['median'] / 4:.1f}"
        lines.append(
            f"{r['config']:<16} {dev:<10} {fmt(r['forward_ms']):>8} {fmt(r['forward_ms'], 'p90'):>8} "
            f"{fmt(r['step_ms']):>9} {fmt(r['step_ms'], 'p90'):>9} {fmt(b4):>8} "
            f"{per:>6} {fmt(r.get('predict_ms')):>8} {r['jpeg_ms']:>5.2f} {r['peak_mem_mb']:>8.0f} "
            f"{fmt(r.get('forward_cpu_ms')):>8} {fmt(r.get('step_cpu_ms')):>9}"
        )
    return "\n".join(lines)


def check_goals(rows: list[dict]) -> list[str]:
    notes = []
    for (dev, cfg, key), goal in GOALS.items():
        for r in rows:
            if r.get("device", "").split(":")[0] == dev and r["config"] == cfg and key in r:
                got = r[key]["median"]
                verdict = "meets" if got <= goal else "MISSES"
                notes.append(
                    f"{cfg} {dev} {key.replace('_ms', '')}: {got:.1f} ms vs goal {goal:.0f} ms: {verdict}"
                )
    return notes


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, default=ROOT / "out" / "bench_engine.json", help="write results here")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list from {', '.join(CONFIGS)}")
    p.add_argument("--devices", default="cpu,cuda", help="cpu and/or cuda (cuda skipped when absent)")
    p.add_argument("--threads", type=int, default=2, help="torch threads on the CPU (default 2)")
    p.add_argument("--reps", type=int, default=30, help="timed repetitions (heavy configs on the CPU: 3)")
    p.add_argument("--warmup", type=int, default=5, help="untimed repetitions first (heavy on the CPU: 1)")
    p.add_argument("--quick", action="store_true", help="5 repetitions, 2 warm-up (smoke test)")
    p.add_argument("--omp-passive", action="store_true", help="run children with OMP_WAIT_POLICY=PASSIVE")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    p.add_argument("--no-batch", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.reps, args.warmup = 5, 2

    if args.child:  # one measurement, JSON on the last stdout line
        r = run_child(args.child, args.device, args.threads, args.warmup, args.reps, batch=not args.no_batch)
        print(json.dumps(r))
        return 0

    import torch
    from tqdm import tqdm

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        p.error(f"unknown configs {unknown}; choose from {list(CONFIGS)}")
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    if "cuda" in devices and not torch.cuda.is_available():
        print("CUDA: not available on this machine; GPU rows skipped")
        devices.remove("cuda")
    info = machine_info()
    unset = [k for k in MALLOC_VARS if not os.environ.get(k)]
    print(
        f"machine: {info['cpu_model']}, {info['cpu_count']} CPUs, load average {info['load_average_start']}"
    )
    print(f"torch {info['torch']}, CUDA device: {info['cuda']}")
    print(
        "malloc env: "
        + ("all set" if not unset else f"NOT SET: {', '.join(unset)} (run through `make` or export them)")
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if args.omp_passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    print(f"OMP_WAIT_POLICY: {env.get('OMP_WAIT_POLICY', 'unset (libgomp default: spin, then sleep)')}")

    jobs = [(c, d) for d in devices for c in configs]
    rows = []
    for cfg, dev in tqdm(jobs, desc="bench", disable=not sys.stderr.isatty()):
        heavy = cfg in HEAVY and dev == "cpu"
        reps, warmup = (min(args.reps, 3), min(args.warmup, 1)) if heavy else (args.reps, args.warmup)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", cfg, "--device", dev,
               "--threads", str(args.threads), "--reps", str(reps), "--warmup", str(warmup)]  # fmt: skip
        if heavy:
            cmd.append("--no-batch")
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            rows.append({"config": cfg, "device": dev, "error": f"exit code {proc.returncode}"})
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    info["load_average_end"] = os.getloadavg()
    print()
    print(table(rows))
    notes = check_goals(rows)
    for n in notes:
        print("goal:", n)
    result = {
        "machine": info,
        "omp_wait_policy": env.get("OMP_WAIT_POLICY"),
        "settings": {"threads": args.threads, "reps": args.reps, "warmup": args.warmup},
        "rows": rows,
        "goals": notes,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
