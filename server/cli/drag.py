"""`livedrag drag`: one drag edit from the command line, with image, GIF, JSON and latent outputs.

The edit runs through the same ``EditSession`` interface the server uses; ``--method`` picks
the implementation (``make_session``), so the learned predictor is one more branch there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from .common import add_model_args, load_model, pick_device, progress

METHODS = ("optimize", "predict")
DEFAULT_STEPS = 200  # step cap of both methods (a room's is its max_steps parameter)


def parse_point(spec: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """'X,Y:TX,TY' -> ((X, Y), (TX, TY)) in image pixels."""
    try:
        h, t = spec.split(":")
        hx, hy = (float(v) for v in h.split(","))
        tx, ty = (float(v) for v in t.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected X,Y:TX,TY (handle then target, pixels), got {spec!r}"
        ) from None
    return (hx, hy), (tx, ty)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "drag",
        help="drag points on a generated image",
        description="Drag handle points to targets on the image a seed names, step by step, and "
        "write the result (and optionally a trajectory GIF, a JSON report and the final latent).",
    )
    p.add_argument("--seed", type=int, required=True, help="the image to edit")
    p.add_argument(
        "--point",
        type=parse_point,
        action="append",
        required=True,
        metavar="X,Y:TX,TY",
        help="a handle at (X, Y) to move to (TX, TY), image pixels; repeat for more points",
    )
    p.add_argument(
        "--mask", type=Path, default=None, help="flexible-area mask image: white = may move, black = keep"
    )
    p.add_argument(
        "--method", choices=METHODS, default="optimize", help="optimize: DragGAN (default); predict: learned"
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"step cap (default {DEFAULT_STEPS}); a drag also ends when the handles arrive, when a "
        "handle's feature is lost, and (predict) when no handle gets closer for a while: the rules "
        "a room's drag follows (server/engine/stop_rules.py)",
    )
    p.add_argument("--lr", type=float, default=2e-3, help="Adam step size (default 2e-3)")
    p.add_argument("--space", choices=("w", "w+"), default="w+", help="latent space optimised (default w+)")
    p.add_argument(
        "--lambda-mask", type=float, default=20.0, help="weight of the fixed-region term (default 20)"
    )
    p.add_argument(
        "--stop-distance", type=float, default=None, help="pixels (default: 1, or 2 for > 5 points)"
    )
    p.add_argument("--trunc", type=float, default=0.7, help="truncation psi of the start image (default 0.7)")
    p.add_argument("--out", type=Path, required=True, help="final image (.png or .jpg)")
    p.add_argument("--overlay", action="store_true", help="draw the points on the final image")
    p.add_argument("--gif", type=Path, default=None, help="write the trajectory as an animated GIF")
    p.add_argument(
        "--gif-scale", type=int, default=None, help="GIF upscaling factor (default: to about 256 px)"
    )
    p.add_argument("--fps", type=float, default=15, help="GIF frames per second (default 15)")
    p.add_argument("--json", type=Path, default=None, help="write a JSON report")
    p.add_argument("--latent", type=Path, default=None, help="write the final W+ latent (.safetensors)")
    add_model_args(p)
    p.set_defaults(func=run)


def make_session(method: str, G, w_plus, handles, targets, mask, args: argparse.Namespace):
    """Build the ``EditSession`` for ``method``."""
    if method == "optimize":
        from server.engine.drag import DragSession
        from server.engine.drag_options import DragOptions

        options = DragOptions(
            space=args.space,
            lr=args.lr,
            lambda_mask=args.lambda_mask,
            max_steps=DEFAULT_STEPS if args.steps is None else args.steps,
            stop_distance=args.stop_distance,
        )
        return DragSession(G, w_plus, handles, targets, mask=mask, options=options)
    if method == "predict":
        from server.engine.predict_session import make_predict_session

        return make_predict_session(
            G,
            w_plus,
            handles,
            targets,
            mask,
            path=getattr(args, "predictor", None),
            stop_distance=args.stop_distance,
            max_steps=DEFAULT_STEPS if args.steps is None else args.steps,
        )
    raise ValueError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")


def load_mask(path: Path, size: int) -> np.ndarray:
    """A mask image -> bool [H, W], True where bright (the flexible area)."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise FileNotFoundError(f"mask not found: {path}")
    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert("L"))
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read mask {path}: {e}") from None
    if a.shape != (size, size):
        raise ValueError(
            f"mask {path} is {a.shape[1]}x{a.shape[0]} px; it must match the {size}x{size} image"
        )
    return a > 127


def save_latent(path: Path, w_plus, meta: dict) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {"w_plus": w_plus.contiguous()},
        str(path),
        metadata={"format": "livedrag.latent", "version": "1", **{k: json.dumps(v) for k, v in meta.items()}},
    )
    return path


def run(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image

    from server.engine.media import draw_points, write_gif

    if args.steps is not None and args.steps < 1:
        raise ValueError("--steps must be >= 1")
    for opt in ("out", "gif", "json", "latent"):
        want = {
            "out": (".png", ".jpg", ".jpeg"),
            "gif": (".gif",),
            "json": (".json",),
            "latent": (".safetensors",),
        }
        p = getattr(args, opt)
        if p is not None and p.suffix.lower() not in want[opt]:
            raise ValueError(f"--{opt} must end in {' or '.join(want[opt])}, got {p.name!r}")
    if args.method not in METHODS:
        raise ValueError(f"unknown method {args.method!r}")
    G = load_model(args)
    res = G.img_resolution
    handles = [h for h, _ in args.point]
    targets = [t for _, t in args.point]
    mask = load_mask(args.mask, res) if args.mask is not None else None
    with torch.no_grad():
        w_plus = G.ws_from_seed(args.seed, truncation_psi=args.trunc)
    session = make_session(args.method, G, w_plus, handles, targets, mask, args)

    frames, points, seconds = [], [], []
    start_frame = session.render()
    if args.gif is not None:
        frames.append(start_frame)
        points.append((session.handles, session.targets))
    t0 = time.perf_counter()
    bar = progress(total=session.options.max_steps, desc=f"drag ({args.method})")
    result = None
    while not session.done:
        result = session.step()
        seconds.append(result.seconds)
        if args.gif is not None:
            frames.append(result.frame)
            points.append((result.handles, result.targets))
        dist = max(
            float(np.hypot(h[0] - t[0], h[1] - t[1]))
            for h, t in zip(result.handles, result.targets, strict=True)
        )
        bar.update(1)
        bar.set_postfix(dist=f"{dist:.1f}px", loss=f"{result.loss:.4f}")
    bar.close()
    total = time.perf_counter() - t0
    assert result is not None

    final = session.render()
    if args.overlay:
        final = draw_points(final, result.handles, result.targets)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(final).save(args.out)
    if args.gif is not None:
        scale = args.gif_scale or max(1, 256 // res)
        write_gif(frames, args.gif, fps=args.fps, points=points, scale=scale)
    distances = [
        float(np.hypot(h[0] - t[0], h[1] - t[1])) for h, t in zip(result.handles, result.targets, strict=True)
    ]
    report = {
        "method": args.method,
        "seed": args.seed,
        "checkpoint": str(args.checkpoint) if args.checkpoint else "embedded",
        "device": str(pick_device(args.device)),
        "resolution": res,
        "handles_start": [list(h) for h in handles],
        "handles": [list(h) for h in result.handles],
        "targets": [list(t) for t in result.targets],
        "distances": distances,
        "steps": result.step,
        "reached": result.reason == "reached",
        "reason": result.reason,
        "lost": [i for i, flag in enumerate(result.lost) if flag],  # handles whose feature was lost
        "match": list(result.match),  # per handle: best-match distance / template spread
        "loss": result.loss,
        "seconds_per_step_median": statistics.median(seconds),
        "seconds_total": total,
        "options": opts.to_dict() if (opts := getattr(session, "options", None)) is not None else None,
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.latent is not None:
        save_latent(
            args.latent, session.latent(), {"seed": args.seed, "method": args.method, "steps": result.step}
        )
    verdict = "reached the targets" if report["reached"] else f"stopped ({result.reason})"
    if report["lost"]:
        which = ", ".join(str(i + 1) for i in report["lost"])
        verdict += f": point tracking lost handle {which} (its feature is no longer found near it)"
    print(
        f"{verdict} after {result.step} steps, max distance {max(distances):.1f} px, "
        f"{1000 * report['seconds_per_step_median']:.1f} ms/step median, {total:.2f} s total; "
        f"wrote {args.out}"
    )
    return 0
