#!/usr/bin/env python
"""Time StyleGAN2 training iterations (G + D, R1 every 16 steps) for a few configs; print sec/kimg.

    export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=1073741824
    .venv/bin/python scripts/bench_train.py --threads 2 --configs 2048/128/16 2048/128/32 1024/64/32

Each config is channel_base/channel_max/batch at --res. Steps run on random images (the data path
costs well under 1% of a step). Reports wall sec/kimg over whole 16-step R1 cycles, process CPU
seconds per kimg, and the 1-minute load average before and after (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from server.training.loop import TrainConfig, Trainer  # noqa: E402


def bench(cfg: TrainConfig, cycles: int, device: str) -> dict:
    tr = Trainer(cfg, tempfile.mkdtemp(prefix="bench_train_"), device, progress=False)
    for _ in range(2):  # warm-up (allocator, oneDNN primitive caches)
        tr.train_step()
    while tr.step % cfg.r1_interval:  # start on an R1 step so every cycle holds exactly one
        tr.train_step()
    load0 = os.getloadavg()[0]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    steps = cycles * cfg.r1_interval
    for _ in range(steps):
        tr.train_step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    kimg = steps * cfg.batch / 1000
    return {
        "res": cfg.res,
        "channel_base": cfg.channel_base,
        "channel_max": cfg.channel_max,
        "batch": cfg.batch,
        "z_dim": cfg.z_dim,
        "w_dim": cfg.w_dim,
        "mapping_layers": cfg.mapping_layers,
        "pl_weight": cfg.pl_weight,
        "threads": torch.get_num_threads(),
        "steps": steps,
        "sec_per_kimg": round(wall / kimg, 2),
        "kimg_per_hour": round(3600 * kimg / wall, 1),
        "cpu_sec_per_kimg": round(cpu / kimg, 2),
        "load_before": load0,
        "load_after": os.getloadavg()[0],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["2048/128/16", "2048/128/32", "1024/64/16", "1024/64/32"])
    p.add_argument("--res", type=int, default=64)
    p.add_argument("--z-dim", type=int, default=256)
    p.add_argument("--w-dim", type=int, default=256)
    p.add_argument("--mapping-layers", type=int, default=4)
    p.add_argument("--pl-weight", type=float, default=0.0)
    p.add_argument("--cycles", type=int, default=1, help="16-step R1 cycles to time per config")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for spec in args.configs:
        base, cmax, batch = (int(v) for v in spec.split("/"))
        cfg = TrainConfig(
            res=args.res,
            channel_base=base,
            channel_max=cmax,
            batch=batch,
            z_dim=args.z_dim,
            w_dim=args.w_dim,
            mapping_layers=args.mapping_layers,
            pl_weight=args.pl_weight,
            data="random",
            data_n=256,
        )
        print(json.dumps(bench(cfg, args.cycles, args.device)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
