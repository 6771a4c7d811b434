"""`livedrag synthfaces`: render a grid of SynthFaces, optionally with their landmarks."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

# one colour per landmark group, for --landmarks
_GROUP_COLOURS = {
    "jaw": (255, 255, 0),
    "left_brow": (255, 128, 0),
    "right_brow": (255, 128, 0),
    "left_eye": (0, 255, 255),
    "right_eye": (0, 255, 255),
    "nose": (255, 0, 255),
    "mouth": (0, 255, 0),
}


def make_grid(images: np.ndarray, landmarks: np.ndarray | None = None, scale: int = 1):
    """[N, H, W, 3] uint8 -> one PIL image, ceil(sqrt(N)) columns; landmarks as dots if given."""
    from PIL import Image, ImageDraw

    from server.synthfaces import LANDMARK_GROUPS

    n, h, w, _ = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = Image.new("RGB", (cols * w * scale, rows * h * scale), (0, 0, 0))
    draw = ImageDraw.Draw(grid)
    r = max(1.0, 0.8 * scale * h / 64)
    for i in range(n):
        ox, oy = (i % cols) * w * scale, (i // cols) * h * scale
        tile = Image.fromarray(images[i])
        if scale != 1:
            tile = tile.resize((w * scale, h * scale), Image.NEAREST)
        grid.paste(tile, (ox, oy))
        if landmarks is not None:
            for group, colour in _GROUP_COLOURS.items():
                for k in LANDMARK_GROUPS[group]:
                    x, y = landmarks[i, k] * scale
                    draw.ellipse([ox + x - r, oy + y - r, ox + x + r, oy + y + r], fill=colour)
    return grid


def run(args: argparse.Namespace) -> int:
    from server.synthfaces import render_batch

    if args.n < 1 or args.size < 8:
        raise ValueError("--n must be >= 1 and --size >= 8")
    images, lms = render_batch(range(args.seed, args.seed + args.n), args.size)
    grid = make_grid(images, lms if args.landmarks else None, scale=args.scale)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    print(f"wrote {out} ({args.n} faces, seeds {args.seed}..{args.seed + args.n - 1}, {args.size} px)")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("synthfaces", help="render a grid of procedural SynthFaces")
    p.add_argument("--n", type=int, default=64, help="number of faces")
    p.add_argument("--size", type=int, default=64, help="face image size in pixels")
    p.add_argument("--seed", type=int, default=0, help="first seed (faces are seeds seed..seed+n-1)")
    p.add_argument("--out", default="synthfaces_grid.png", help="output PNG")
    p.add_argument("--landmarks", action="store_true", help="draw landmarks as coloured dots")
    p.add_argument("--scale", type=int, default=1, help="nearest-neighbour upscale of each tile")
    p.set_defaults(func=run)
