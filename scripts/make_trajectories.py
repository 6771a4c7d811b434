#!/usr/bin/env python
"""Teacher drag trajectories for the Latent Predictor: DragGAN's optimiser on random edits.

The command line of ``server/training/trajectories.py`` (which documents the edits and the shard
format). Edits: landmark drags on SynthFaces (with the shipped landmark detector), random points
in the image centre, and, landmark-free for any generator, drags of high-contrast points
(``--contrast-frac``: where the Sobel magnitude of the generated image is high; short moves or
bench_drag's 2-8 px ``shift``) and long group drags (``--long-frac``: 8-25% of the image, bench_drag's
``long`` protocol without landmarks). On SynthFaces, ``--landmark-long-frac`` makes that share of
the landmark drags bench_drag's long landmark groups themselves (server/synthfaces/long_drags.py).

Output: ``<out>/shard_NNNNN.safetensors``, written atomically. Shard i is fully determined by
(--seed, i), so an interrupted run resumes by skipping finished shards, and
``--workers N --worker I`` splits the shards among N processes (one per core):

    .venv/bin/python scripts/make_trajectories.py --out runs/trajectories --shards 48 --per-shard 64
    .venv/bin/python scripts/make_trajectories.py --checkpoint mine.safetensors --no-detector \\
        --contrast-frac 0.5 --long-frac 0.25 --out runs/mine_trajectories
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from server.engine.predictor_io import GeneratorIdentity  # noqa: E402
from server.engine.stop_rules import LOST_RATIO  # noqa: E402
from server.training.trajectories import (  # noqa: E402, F401 - re-exported for older callers
    FORMAT,
    FORMAT_VERSION,
    KIND_CONTRAST,
    KIND_LANDMARK,
    KIND_LANDMARK_LONG,
    KIND_LONG,
    KIND_RANDOM,
    TrajectoryConfig,
    contrast_points,
    face_box,
    landmark_subset,
    make_shard,
    make_trajectories,
    pending_shards,
    random_edit,
    read_shards,
    shard_identity,
    shard_path,
    write_shard,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="generator .safetensors (default: embedded model)")
    p.add_argument("--out", type=Path, default=Path("runs/trajectories"), help="shard directory")
    p.add_argument("--shards", type=int, default=48, help="number of shards (default 48)")
    p.add_argument("--per-shard", type=int, default=64, help="trajectories per shard (default 64)")
    p.add_argument("--batch", type=int, default=16, help="drags stepped together (default 16)")
    p.add_argument("--seed", type=int, default=0, help="base seed; shard i uses (seed, i)")
    p.add_argument("--seed-base", type=int, default=1_000_000, help="image seeds are drawn above this")
    p.add_argument("--max-steps", type=int, default=200, help="DragGAN step budget per drag (default 200)")
    p.add_argument(
        "--lr",
        type=float,
        default=2e-3,
        help="teacher's Adam step size (default 2e-3, the optimiser mode's and the benchmark's; "
        "see docs/predictor.md, 'The teacher's step size')",
    )
    p.add_argument("--n-rows", type=int, default=6, help="W+ rows optimised and recorded (default 6)")
    p.add_argument(
        "--lost-ratio",
        type=lambda v: None if v == "none" else float(v),
        default=LOST_RATIO,
        help=f"a teacher drag ends when a handle is lost, match above this (default {LOST_RATIO}, the "
        "product's rule, server/engine/stop_rules.py; none: drags go on after losing a handle)",
    )
    p.add_argument("--trunc", type=float, nargs=2, default=(0.6, 0.8), help="truncation psi range")
    p.add_argument("--landmark-frac", type=float, default=0.5, help="share of landmark-to-landmark drags")
    p.add_argument(
        "--landmark-long-frac",
        type=float,
        default=0.0,
        help="share of the landmark drags that are bench_drag's long group drags (a smile, the chin "
        "down, the nose sideways, the brows up, the whole head, by 8-25%% of the image; default 0)",
    )
    p.add_argument(
        "--shift-frac",
        type=float,
        default=0.5,
        help="share of landmark and contrast drags whose targets are the points moved by one 2-8 px "
        "shift (+-1 px jitter) instead of face B's landmarks or a random move (default 0.5)",
    )
    p.add_argument(
        "--contrast-frac",
        type=float,
        default=0.0,
        help="share of the non-landmark drags whose handles are high-contrast points (Sobel "
        "magnitude of the generated image; landmark-free, any generator; default 0)",
    )
    p.add_argument(
        "--long-frac",
        type=float,
        default=0.0,
        help="share of the non-landmark drags that move a group of high-contrast points by 8-25%% "
        "of the image (bench_drag's long protocol without landmarks; default 0)",
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "float16", "bfloat16"),
        help="teacher's synthesis dtype (half precision on a GPU; default float32)",
    )
    p.add_argument("--detector", default=None, help="landmark detector (default: the shipped one)")
    p.add_argument(
        "--no-detector",
        action="store_true",
        help="no landmark drags (random points, and high-contrast ones with --contrast-frac/--long-frac)",
    )
    p.add_argument("--workers", type=int, default=1, help="split the shards among this many processes")
    p.add_argument(
        "--worker", type=int, default=0, help="this process makes shards i with i %% workers == worker"
    )
    p.add_argument("--device", default=None, help="cpu, cuda (default: cuda if available)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--no-progress", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> TrajectoryConfig:
    return TrajectoryConfig(
        shards=args.shards,
        per_shard=args.per_shard,
        batch=args.batch,
        seed=args.seed,
        seed_base=args.seed_base,
        max_steps=args.max_steps,
        lr=args.lr,
        n_rows=args.n_rows,
        lost_ratio=args.lost_ratio,
        trunc=tuple(args.trunc),
        landmark_frac=args.landmark_frac,
        landmark_long_frac=args.landmark_long_frac,
        shift_frac=args.shift_frac,
        contrast_frac=args.contrast_frac,
        long_frac=args.long_frac,
        dtype=args.dtype,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    from server.cli.common import pick_device, progress
    from server.engine.checkpoint import load_generator

    try:
        cfg = config_from_args(args)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    device = pick_device(args.device)
    G = load_generator(args.checkpoint, device=device)
    identity = GeneratorIdentity.of(G)
    detector = None
    if not args.no_detector:
        from server.synthfaces.detector import load_detector

        try:
            detector = load_detector(args.detector, device=device)
        except FileNotFoundError as e:
            print(f"warning: {e}; using random points in the image centre only", file=sys.stderr)
    if not 0 <= args.worker < args.workers:
        raise SystemExit(f"--worker must be in [0, --workers), got {args.worker} of {args.workers}")
    mine = list(range(args.worker, args.shards, args.workers))
    try:
        todo = pending_shards(args.out, mine, identity)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    n_done = len(mine) - len(todo)
    print(f"{n_done} of this worker's {len(mine)} shards done; making {len(todo)} in {args.out}")
    meta = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}

    def bar_factory(total: int):
        return progress(total=total, desc="trajectories", disable=True if args.no_progress else None)

    done = make_trajectories(G, args.out, cfg, detector, shards=todo, meta=meta, bar_factory=bar_factory)
    rate = f", {done['steps_per_s']:.1f} teacher steps/s" if done["steps_per_s"] else ""
    print(f"done in {done['seconds']:.0f} s: {done['drags']} drags, {done['steps']} steps{rate}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
