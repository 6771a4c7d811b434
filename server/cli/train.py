"""``livedrag train``: predict mode and the encoder for any StyleGAN2 generator, in one command."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Train predict mode (teacher trajectories with DragGAN's optimiser, predictor stage 1 and 2) and
the encoder for a generator, evaluate them, and write a model folder for `livedrag models` and
`livedrag serve --models`: OUT/card.json, generator.safetensors, predictor.safetensors,
encoder.safetensors, report.json and report.md (OUT's name is the model's name; OUT/training holds
the work). Run the same command again to resume: finished stages are skipped, an interrupted one
continues from its checkpoint. See docs/models.md.

  livedrag train --checkpoint mine.safetensors --out ~/models/mine --preset small
  livedrag train --checkpoint mine.safetensors --out ~/models/mine --device cuda --hours 4
"""


def register(sub: argparse._SubParsersAction) -> None:
    from server.training.plan import PRESETS, STAGES

    p = sub.add_parser(
        "train",
        help="train predict mode and the encoder for a generator (resumable)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--checkpoint", required=True, help="generator .safetensors (`livedrag convert` makes one)"
    )
    p.add_argument("--out", required=True, type=Path, help="model folder to write; its name is the model's")
    p.add_argument(
        "--preset",
        choices=PRESETS,
        default="full",
        help="sizes: tiny (a test, seconds), small (minutes per stage on a CPU at 64 px), full (the "
        "shipped SynthFaces sizes; default)",
    )
    p.add_argument(
        "--hours",
        type=float,
        default=None,
        help="time budget split among the stages (trajectories 40%%, stage 1 5%%, stage 2 30%%, encoder "
        "20%%, evaluation 5%%), sized from throughputs measured at the start",
    )
    size = p.add_argument_group("sizes (override the preset or the budget)")
    size.add_argument("--drags", type=int, default=None, help="teacher drags")
    size.add_argument("--teacher-steps", type=int, default=None, help="step budget of a teacher drag")
    size.add_argument("--stage1-iters", type=int, default=None, help="predictor stage 1 iterations")
    size.add_argument("--stage2-iters", type=int, default=None, help="predictor stage 2 iterations")
    size.add_argument("--encoder-steps", type=int, default=None, help="encoder iterations")
    size.add_argument("--eval-edits", type=int, default=None, help="evaluation edits per row")
    p.add_argument(
        "--dtype",
        choices=("float32", "float16", "bfloat16"),
        default="float32",
        help="teacher's synthesis dtype (half precision on a GPU; default float32)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--licence", default="unknown", help="the weights' licence, for the card")
    p.add_argument("--source", default=None, help="where the weights come from (default: the file's name)")
    p.add_argument("--until", choices=STAGES, default=None, help="stop after this stage")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from server.training.pipeline import TrainRequest, run_pipeline

    ckpt = Path(args.checkpoint)
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt}")
    req = TrainRequest(
        checkpoint=ckpt,
        out=args.out,
        preset=args.preset,
        hours=args.hours,
        drags=args.drags,
        teacher_steps=args.teacher_steps,
        stage1_iters=args.stage1_iters,
        stage2_iters=args.stage2_iters,
        encoder_steps=args.encoder_steps,
        eval_edits=args.eval_edits,
        dtype=args.dtype,
        device=args.device,
        threads=args.threads,
        licence=args.licence,
        source=args.source,
        until=args.until,
        progress=False if args.no_progress else None,
    )
    report = run_pipeline(req)
    return 0 if report["check"]["ok"] else 2
