#!/usr/bin/env python
"""Train the SynthFaces StyleGAN2 (the embedded default model) on the CPU or CUDA, in chunks.

Training images are SynthFaces renderer seeds [0, N), rendered once into runs/data/ (held-out
evaluation uses seeds >= 10_000_000). Run in chunks of wall time; each chunk resumes from the run
directory's checkpoint and stops cleanly (checkpoint written) after --minutes or on SIGTERM/Ctrl-C:

    .venv/bin/python scripts/train_generator.py --out runs/sf64 --kimg 200 --minutes 120 --resume
    .venv/bin/python scripts/train_generator.py --out runs/sf64 --export-only \\
        --export server/assets/synthfaces_g.safetensors

Run as a script, it re-executes itself once with the project's glibc malloc settings
(up to 1.8x faster on the CPU) and OMP_WAIT_POLICY=PASSIVE (OpenMP threads that spin
on a shared, busy CPU slow everything down many times), unless they are already set.

The run directory gets checkpoint.pt, log.jsonl, grids/*.png and snapshots/*.safetensors
(see server/training/loop.py). --export writes G_ema as fp16 safetensors with metadata (kimg,
seed, training config, compute) after the chunk.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from server.training.chunks import reexec_with_cpu_env  # noqa: E402
from server.training.data import ImageDataset  # noqa: E402
from server.training.loop import CHECKPOINT_NAME, RESUMABLE_OVERRIDES, TrainConfig, Trainer  # noqa: E402

# command-line flag -> TrainConfig field (a flag left at None keeps the default or the checkpoint's value)
FLAGS = {
    "res": int,
    "channel_base": int,
    "channel_max": int,
    "w_dim": int,
    "z_dim": int,
    "mapping_layers": int,
    "batch": int,
    "kimg": float,
    "lr": float,
    "r1_gamma": float,
    "r1_interval": int,
    "pl_weight": float,
    "style_mixing": float,
    "ema_kimg": float,
    "data": str,
    "data_n": int,
    "seed": int,
    "snap_kimg": float,
    "grid_kimg": float,
    "ckpt_kimg": float,
    "log_kimg": float,
    "noise_mode": str,
}
RENAMED = {"kimg": "total_kimg", "style_mixing": "style_mixing_prob"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run directory, e.g. runs/sf64")
    p.add_argument(
        "--data-dir", default=None, help="where the rendered dataset is cached (default: <out>/../data)"
    )
    defaults = TrainConfig()
    for flag, typ in FLAGS.items():
        default = getattr(defaults, RENAMED.get(flag, flag))
        p.add_argument(f"--{flag.replace('_', '-')}", type=typ, default=None, help=f"(default {default})")
    p.add_argument(
        "--xflip", action=argparse.BooleanOptionalAction, default=None, help="random x-flips of the reals"
    )
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast on CUDA")
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels-last memory format for D (off by default; see docs/training.md)",
    )
    p.add_argument("--minutes", type=float, default=None, help="stop cleanly after this much wall time")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many minibatches (tests)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt if it exists")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--export", default=None, help="write G_ema to this .safetensors (fp16, with provenance)")
    p.add_argument(
        "--export-only", action="store_true", help="only export the checkpoint's G_ema; no training"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_overrides(args: argparse.Namespace) -> dict:
    out = {}
    for flag in list(FLAGS) + ["xflip", "amp", "channels_last"]:
        v = getattr(args, flag)
        if v is not None:
            out[RENAMED.get(flag, flag)] = v
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    run_dir = Path(args.out)
    overrides = config_overrides(args)
    progress = not args.no_progress
    if (args.resume or args.export_only) and (run_dir / CHECKPOINT_NAME).is_file():
        ckpt_cfg = Trainer.read_checkpoint(run_dir / CHECKPOINT_NAME)["config"]
        changed = {
            k: v for k, v in overrides.items() if k not in RESUMABLE_OVERRIDES and ckpt_cfg.get(k) != v
        }
        if changed:
            print(
                f"error: {run_dir} was trained with other settings; cannot change {changed} "
                f"(only {', '.join(RESUMABLE_OVERRIDES)})",
                file=sys.stderr,
            )
            return 2
        keep = {k: v for k, v in overrides.items() if k in RESUMABLE_OVERRIDES}
        dataset = None
        if args.export_only:  # no training: skip loading (or rendering) the images
            dataset = ImageDataset(np.zeros((1, ckpt_cfg["res"], ckpt_cfg["res"], 3), np.uint8))
        trainer = Trainer.resume(
            run_dir, device, overrides=keep, dataset=dataset, data_dir=args.data_dir, progress=progress
        )
        print(f"resumed {run_dir} at {trainer.kimg:.1f} kimg (step {trainer.step})", file=sys.stderr)
    elif args.export_only:
        print(f"error: --export-only needs {run_dir / CHECKPOINT_NAME}", file=sys.stderr)
        return 2
    else:
        if (run_dir / CHECKPOINT_NAME).is_file():
            print(
                f"error: {run_dir} already holds a checkpoint: pass --resume or choose another --out",
                file=sys.stderr,
            )
            return 2
        known = {f.name for f in fields(TrainConfig)}
        cfg = TrainConfig(**{k: v for k, v in overrides.items() if k in known})
        trainer = Trainer(cfg, run_dir, device, data_dir=args.data_dir, progress=progress)
    cfg = trainer.cfg
    if not args.export_only:
        print(
            f"training {cfg.res} px, channels {cfg.channel_base}/{cfg.channel_max}, batch {cfg.batch}, "
            f"to {cfg.total_kimg} kimg on {device} ({torch.get_num_threads()} threads); "
            f"R1 gamma {cfg.r1_gamma_value:.4g}, pl_weight {cfg.pl_weight}",
            file=sys.stderr,
        )
        reason = trainer.run(minutes=args.minutes, max_steps=args.max_steps)
        last = trainer.chunks[-1]
        print(
            json.dumps(
                {
                    "stopped": reason,
                    "kimg": round(trainer.kimg, 3),
                    "step": trainer.step,
                    "chunk_seconds": last["seconds"],
                    "sec_per_kimg": round(last["seconds"] / max(trainer.kimg - last["start_kimg"], 1e-9), 2),
                }
            )
        )
    if args.export:
        path = trainer.save_snapshot(args.export)
        print(
            f"exported G_ema at {trainer.kimg:.1f} kimg to {path} ({path.stat().st_size / 1e6:.2f} MB)",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    reexec_with_cpu_env()
    sys.exit(main())
