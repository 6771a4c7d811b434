"""``livedrag convert IN OUT.safetensors``: NVIDIA StyleGAN2 .pkl or rosinality .pt -> livedrag checkpoint."""

from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger("livedrag.convert")

DESCRIPTION = """\
Convert a StyleGAN2 generator checkpoint into livedrag's native format (safetensors + config).

Accepted (told apart by content, not by file name):
  * NVIDIA pickles from stylegan2-ada-pytorch or the stylegan3 repository (stylegan2-*.pkl):
    a training snapshot (G, D, G_ema, ...), a dict with only G_ema, or a bare G_ema.
    Read without executing the code stored in the pickle and without NVIDIA's code.
  * rosinality stylegan2-pytorch checkpoints (.pt with a 'g_ema' state dict).
Refused, with a message that names the reason: StyleGAN3 (-t/-r) generators, TensorFlow
pickles, any pickle that references code outside NVIDIA's network format.
See docs/checkpoints.md.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert an NVIDIA .pkl / rosinality .pt StyleGAN2 to .safetensors",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", help="NVIDIA .pkl or rosinality .pt file")
    p.add_argument("output", help="livedrag .safetensors file to write")
    p.add_argument("--half", action="store_true", help="store weights as float16 (half the size)")
    p.add_argument(
        "--name", default=None, help="model name recorded in the config (default: input file stem)"
    )
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from server.engine.checkpoint import load_generator
    from server.engine.convert import convert_file

    out = convert_file(args.input, args.output, half=args.half, name=args.name, overwrite=args.force)
    G2 = load_generator(args.output)  # the written file loads strictly
    cfg = G2.cfg
    n_params = sum(p.numel() for p in G2.parameters())
    print(
        f"wrote {args.output}: {cfg.img_resolution}x{cfg.img_resolution} {cfg.architecture}, "
        f"z_dim {cfg.z_dim}, w_dim {cfg.w_dim}, c_dim {cfg.c_dim}, num_ws {cfg.num_ws}, "
        f"{n_params / 1e6:.1f} M parameters{' (fp16)' if args.half else ''}"
    )
    print(f"source: {out.source['format']}, sha256 {out.source['sha256']}")
    log.debug("provenance: %s", json.dumps(out.source, sort_keys=True))
    return 0
