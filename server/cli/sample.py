"""`livedrag sample`: render seeds to one image grid (a quick look at a model)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .common import add_model_args, load_model, parse_seeds, progress

MAX_SEEDS = 1024


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sample",
        help="render seeds to an image grid",
        description="Render the images that seeds name (z from a CPU RNG, truncation toward w_avg) "
        "and tile them into one PNG/JPEG grid, row by row in seed order.",
    )
    p.add_argument("--seeds", required=True, help="seeds, e.g. 0-15 or 1,4,9-12")
    p.add_argument("--out", required=True, type=Path, help="output image (.png or .jpg)")
    p.add_argument("--trunc", type=float, default=0.7, help="truncation psi (default 0.7; 1 = none)")
    p.add_argument("--cols", type=int, default=None, help="grid columns (default: about square)")
    p.add_argument("--batch", type=int, default=8, help="images per forward pass (default 8)")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from server.engine.generator import to_uint8
    from server.engine.media import make_grid

    seeds = parse_seeds(args.seeds)
    if len(seeds) > MAX_SEEDS:
        raise ValueError(f"{len(seeds)} seeds is too many for one grid (at most {MAX_SEEDS})")
    if args.batch < 1:
        raise ValueError("--batch must be >= 1")
    if args.cols is not None and args.cols < 1:
        raise ValueError("--cols must be >= 1")
    if args.out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise ValueError(f"--out must end in .png, .jpg or .jpeg, got {args.out.name!r}")
    G = load_model(args)
    device = G.mapping.w_avg.device
    images = []
    bar = progress(total=len(seeds), desc="sample")
    with torch.no_grad():
        for i in range(0, len(seeds), args.batch):
            chunk = seeds[i : i + args.batch]
            z = torch.cat([G.z_from_seed(s) for s in chunk]).to(device)
            ws = G.mapping(z, None, truncation_psi=args.trunc)
            img, _ = G.synthesis(ws)
            images.extend(to_uint8(img))
            bar.update(len(chunk))
    bar.close()
    grid = make_grid(images, cols=args.cols)
    from PIL import Image

    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(args.out)
    print(f"wrote {args.out} ({len(seeds)} images, {grid.shape[1]}x{grid.shape[0]} px)")
    return 0
