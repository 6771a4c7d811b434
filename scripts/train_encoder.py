"""Train the image -> W+ encoder (server/engine/encoder.py) on images of its own generator.

Data are generated only: W+ latents are sampled (mapping of random z, a random truncation psi in
[psi_min, 1], style mixing between two w at a random crossover row so W+ rows differ, and a small
Gaussian perturbation in units of the W std) and synthesised with the frozen generator
(noise_mode const). To spend the CPU on the encoder rather than on the generator, samples live in
a pool that is refreshed a few items per step.

Losses: the latent MSE in units of the per-dimension W std, plus (after ``--image-after`` steps)
an image loss on a sub-batch: the encoder's latent is synthesised (generator frozen, gradients
flow through it) and compared with the target by pixel L1 + MSE and the perceptual distance of
server/engine/perceptual.py.

Every ``--log-every`` steps: a log line with the losses and the PSNR of encoder reconstructions of
a fixed held-out batch; every ``--grid-every`` steps and at the end: a PNG grid whose rows are
target | encoder | encoder + 30 optimisation steps. Resumable: ``OUT/ckpt.pt`` (tensors and plain
containers, loaded with weights_only=True) is written every ``--ckpt-every`` steps and at the end;
rerun the same command to continue. ``--minutes`` stops a chunk early (the CPU is shared). The loop
is server/training/encoder_train.py (``livedrag train`` runs it too); this is its command line.

    python scripts/train_encoder.py --out runs/encoder --threads 1 --steps 3000 --minutes 12
    python scripts/train_encoder.py --out runs/encoder --threads 1 --steps 3000 \
        --export server/assets/synthfaces_encoder.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.engine.checkpoint import load_generator  # noqa: E402
from server.training.encoder_train import (  # noqa: E402, F401 - re-exported for callers
    EncoderTrainConfig,
    psnr,
    sample_wplus,
    synth,
    train_encoder,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/encoder", help="run folder (checkpoint, log, grids)")
    p.add_argument("--checkpoint", default=None, help="generator (default: embedded SynthFaces model)")
    p.add_argument("--steps", type=int, default=3000, help="total optimiser steps (sets the lr schedule)")
    p.add_argument("--minutes", type=float, default=0.0, help="stop this chunk after this long (0: no limit)")
    p.add_argument("--batch", type=int, default=32, help="latent-loss batch")
    p.add_argument("--image-batch", type=int, default=8, help="image-loss sub-batch")
    p.add_argument("--image-after", type=int, default=1000, help="add the image loss from this step on")
    p.add_argument("--pool", type=int, default=2048, help="generated samples kept in memory")
    p.add_argument("--refresh", type=int, default=8, help="pool samples replaced per step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-min", type=float, default=5e-5, help="cosine schedule floor")
    p.add_argument("--latent-weight", type=float, default=1.0)
    p.add_argument("--l1-weight", type=float, default=1.0)
    p.add_argument("--mse-weight", type=float, default=1.0)
    p.add_argument("--perceptual-weight", type=float, default=1.0)
    p.add_argument("--psi-min", type=float, default=0.5)
    p.add_argument("--mix-prob", type=float, default=0.9)
    p.add_argument("--perturb", type=float, default=0.1, help="max Gaussian perturbation (units of W std)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--held-out", type=int, default=32)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--grid-every", type=int, default=500)
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    p.add_argument("--export", default=None, help="write the encoder file here at the end")
    p.add_argument(
        "--channels", type=int, nargs="+", default=None, help="encoder stages (default 32 64 128 160)"
    )
    p.add_argument("--feat-dim", type=int, default=None, help="image feature size (default 384)")
    p.add_argument("--row-dim", type=int, default=None, help="per-row head size (default 384)")
    p.add_argument(
        "--init",
        default=None,
        help="warm start from an encoder file or another run's ckpt.pt (same architecture; its "
        "generator may differ, e.g. an earlier snapshot): fine-tunes rather than starts over",
    )
    p.add_argument("--no-grids", dest="grids", action="store_false", help="write no PNG grids")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    G = load_generator(args.checkpoint, device=args.device)
    cfg = EncoderTrainConfig.from_namespace(argparse.Namespace(**{**vars(args), "out": Path(args.out)}))
    train_encoder(G, cfg, args.device, export=args.export, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
