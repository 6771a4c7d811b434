#!/usr/bin/env python
"""Train the default SynthFaces generator by distilling the renderer (server/training/distill.py).

Every training image is rendered on the fly from a fresh latent, so there is no dataset to cache.
Run in chunks of wall time; each chunk resumes from the run directory's checkpoint and stops
cleanly (checkpoint written) after --minutes or on SIGTERM/Ctrl-C:

    .venv/bin/python scripts/train_distill.py --out runs/sf128 --kimg 1000 --minutes 120 --resume --threads 1
    .venv/bin/python scripts/train_distill.py --out runs/sf128 --export-only \\
        --export server/assets/synthfaces_g.safetensors

The same command runs on a GPU with --device cuda (the renderer stays on the CPU). Run as a
script, it re-executes itself once with the project's glibc malloc settings and
OMP_WAIT_POLICY=PASSIVE (see docs/BENCHMARKS.md), unless they are already set.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from server.training.chunks import reexec_with_cpu_env  # noqa: E402
from server.training.distill import (  # noqa: E402
    CHECKPOINT_NAME,
    RESUMABLE_OVERRIDES,
    DistillConfig,
    DistillTrainer,
)

RENAMED = {"kimg": "total_kimg"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run directory, e.g. runs/sf128")
    defaults = DistillConfig()
    for f in fields(DistillConfig):
        if f.name == "betas":
            continue
        flag = next((k for k, v in RENAMED.items() if v == f.name), f.name)
        default = getattr(defaults, f.name)
        p.add_argument(
            f"--{flag.replace('_', '-')}",
            dest=f.name,
            type=type(default),
            default=None,
            help=f"(default {default})",
        )
    p.add_argument("--minutes", type=float, default=None, help="stop cleanly after this much wall time")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many minibatches (tests)")
    p.add_argument(
        "--stop-kimg",
        type=float,
        default=None,
        help="end this chunk at this many kimg (checkpoint written) and leave the schedule (--kimg) "
        "alone: replays a run whose loss weights changed along the way (scripts/train_default_model.sh)",
    )
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt if it exists")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument(
        "--render-workers", type=int, default=0, help="render in this many processes (a GPU needs them)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--export", default=None, help="write G_ema to this .safetensors (fp16, with provenance)")
    p.add_argument(
        "--export-only", action="store_true", help="only export the checkpoint's G_ema; no training"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    run_dir = Path(args.out)
    overrides = {
        f.name: getattr(args, f.name)
        for f in fields(DistillConfig)
        if getattr(args, f.name, None) is not None
    }
    ckpt = run_dir / CHECKPOINT_NAME
    if (args.resume or args.export_only) and ckpt.is_file():
        changed = sorted(set(overrides) - set(RESUMABLE_OVERRIDES))
        saved = (
            json.loads((run_dir / "distill_config.json").read_text())
            if (run_dir / "distill_config.json").is_file()
            else {}
        )
        changed = [k for k in changed if saved.get(k) != overrides[k]]
        if changed:
            print(
                f"error: {run_dir} was trained with other settings; cannot change {changed} "
                f"(only {', '.join(RESUMABLE_OVERRIDES)})",
                file=sys.stderr,
            )
            return 2
        keep = {k: v for k, v in overrides.items() if k in RESUMABLE_OVERRIDES}
        trainer = DistillTrainer.resume(run_dir, device, overrides=keep, render_workers=args.render_workers)
        print(f"resumed {run_dir} at {trainer.kimg:.1f} kimg (step {trainer.step})", file=sys.stderr)
    elif args.export_only:
        print(f"error: --export-only needs {ckpt}", file=sys.stderr)
        return 2
    else:
        if ckpt.is_file():
            print(
                f"error: {run_dir} already holds a checkpoint: pass --resume or choose another --out",
                file=sys.stderr,
            )
            return 2
        trainer = DistillTrainer(DistillConfig(**overrides), run_dir, device, args.render_workers)
    cfg = trainer.cfg
    if not args.export_only and args.stop_kimg is not None and trainer.kimg >= args.stop_kimg - 1e-9:
        print(f"{run_dir} is at {trainer.kimg:.3f} kimg, past --stop-kimg {args.stop_kimg:g}: nothing to do")
        return 0
    if not args.export_only:
        print(
            f"distilling {cfg.res} px, channels {cfg.channel_base}/{cfg.channel_max}, batch {cfg.batch}, "
            f"to {cfg.total_kimg} kimg on {device} ({torch.get_num_threads()} threads); losses L1 + "
            f"{cfg.edge_weight} edge + {cfg.perceptual_weight} perceptual + {cfg.flat_weight} flat + "
            f"{cfg.adv_weight} adversarial, mixing {cfg.mix_prob} at row {cfg.mix_cut}",
            file=sys.stderr,
        )
        reason = trainer.run(
            minutes=args.minutes,
            max_steps=args.max_steps,
            progress=not args.no_progress,
            stop_kimg=args.stop_kimg,
        )
        last = trainer.chunks[-1]
        print(
            json.dumps(
                {
                    "stopped": reason,
                    "kimg": round(trainer.kimg, 3),
                    "step": trainer.step,
                    "chunk_seconds": last["seconds"],
                    "held_out_psnr": round(trainer.held_out_psnr(), 3),
                }
            )
        )
    trainer.renderer.close()
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
