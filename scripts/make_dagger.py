#!/usr/bin/env python
"""Teacher labels at the predictor's own states (DAgger) for predictor training.

The command line of ``server/training/dagger.py`` (which says why and how): drags of a teacher
set (``--traj``, scripts/make_trajectories.py) are run by the predictor (``--predictor``, default
the shipped file) for 1..--max-rollout steps, then DragGAN's optimiser continues each for up to
--teacher-steps steps, tracking with the drag's start templates; the continuations are written as
trajectory shards (``<out>/shard_NNNNN.safetensors``, the teacher format). Only the teacher
set's training trajectories are used (``train_predictor.py``'s split for its --seed, given here as
--split-seed). Shard i is a function of (--seed, i), so a run resumes, and ``--workers N
--worker I`` splits the shards:

    .venv/bin/python scripts/make_dagger.py --traj runs/traj128b_all --out runs/dagger128 --shards 16
    # then stage 2 on a folder linking both sets of shards (docs/predictor.md)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from server.training.dagger import DaggerConfig, make_dagger  # noqa: E402
from server.training.predictor_train import PredictorTrainConfig, split_trajectories  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--traj", type=Path, required=True, help="teacher shards whose drags are rolled out")
    p.add_argument("--out", type=Path, required=True, help="shard directory for the continuations")
    p.add_argument("--predictor", default=None, help="predictor file (default: the shipped one)")
    p.add_argument("--checkpoint", default=None, help="generator .safetensors (default: embedded model)")
    d = DaggerConfig()
    p.add_argument("--shards", type=int, default=d.shards)
    p.add_argument("--per-shard", type=int, default=d.per_shard)
    p.add_argument("--batch", type=int, default=d.batch, help="drags advanced together")
    p.add_argument("--seed", type=int, default=d.seed, help="shard i draws its drags with (seed, i)")
    p.add_argument("--max-rollout", type=int, default=d.max_rollout, help="predictor steps: 1..this")
    p.add_argument("--teacher-steps", type=int, default=d.teacher_steps, help="optimiser steps recorded")
    p.add_argument("--lr", type=float, default=d.lr, help="the teacher's Adam step size")
    p.add_argument("--n-rows", type=int, default=d.n_rows, help="W+ rows optimised and recorded")
    t = PredictorTrainConfig()
    p.add_argument("--val-frac", type=float, default=t.val_frac, help="train_predictor's held-out share")
    p.add_argument("--split-seed", type=int, default=t.seed, help="train_predictor's --seed (its split)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--worker", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda (default: cuda if available)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    from server.cli.common import pick_device, progress
    from server.engine.checkpoint import load_generator
    from server.engine.predictor_io import GeneratorIdentity, load_predictor
    from server.training.trajectories import read_shards

    device = pick_device(args.device)
    G = load_generator(args.checkpoint, device=device)
    model = load_predictor(args.predictor, G=G).to(device)
    paths = sorted(args.traj.glob("shard_*.safetensors"))
    if not paths:
        print(f"no teacher shards in {args.traj}", file=sys.stderr)
        return 2
    src = read_shards(paths, GeneratorIdentity.of(G))
    ids, _ = split_trajectories(len(src["n_points"]), args.split_seed, args.val_frac)
    cfg = DaggerConfig(
        shards=args.shards,
        per_shard=args.per_shard,
        batch=args.batch,
        seed=args.seed,
        max_rollout=args.max_rollout,
        teacher_steps=args.teacher_steps,
        lr=args.lr,
        n_rows=args.n_rows,
    )
    mine = [i for i in range(cfg.shards) if i % args.workers == args.worker]

    def bar_factory(total: int):
        return progress(total=total, desc="dagger drags", disable=True if args.no_progress else None)

    done = make_dagger(G, model, src, ids, args.out, cfg, shards=mine, bar_factory=bar_factory)
    print(
        f"{done['shards_made']} shards, {done['drags']} continuations, {done['steps']} teacher steps "
        f"in {done['seconds']:.0f} s -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
