"""`livedrag invert`: project a picture into the generator's W+ space and write the latent.

    livedrag invert photo.png --out latent.safetensors [--method encoder|optimize] [--steps N]
                    [--pti N] [--preview preview.png]

``--method encoder`` runs the trained encoder once (milliseconds); ``optimize`` (default) starts
from the encoder's estimate (from ``w_avg`` when no encoder fits the model, with a note) and
runs up to ``--steps`` projection steps (server/engine/project.py). ``--pti N`` adds N pivotal
tuning steps; the tuned generator is then written next to the latent (``--tuned-generator``),
since the latent reproduces the picture only with it. The latent file has the server's format
(server/engine/latent_io.py). Bad pictures (type, size, damage) exit with status 2 and one line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .common import add_model_args, load_model, progress

METHODS = ("encoder", "optimize")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "invert",
        help="project a picture into the model's latent space",
        description="Project a PNG, JPEG or WebP picture into W+ (encoder, then optional "
        "optimisation and pivotal tuning) and write the latent as .safetensors.",
    )
    p.add_argument("image", type=Path, help="the picture (PNG, JPEG or WebP)")
    p.add_argument("--out", type=Path, required=True, help="latent file to write (.safetensors)")
    p.add_argument(
        "--method", choices=METHODS, default="optimize", help="encoder: one pass; optimize (default): + steps"
    )
    p.add_argument("--steps", type=int, default=100, help="optimisation step cap (default 100)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: ProjectOptions)")
    p.add_argument("--pti", type=int, default=0, help="pivotal tuning steps after optimisation (default 0)")
    p.add_argument(
        "--tuned-generator",
        type=Path,
        default=None,
        help="where to write the tuned generator with --pti (default: OUT with .generator.safetensors)",
    )
    p.add_argument("--encoder", type=Path, default=None, help="encoder file (default: the shipped one)")
    p.add_argument("--preview", type=Path, default=None, help="write target | result as a PNG")
    p.add_argument("--json", type=Path, default=None, help="write a JSON report")
    add_model_args(p)
    p.set_defaults(func=run)


def _fail(msg: str) -> int:
    print(f"livedrag invert: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from server.engine.checkpoint import save_generator
    from server.engine.encoder import EncoderError, encode, load_encoder
    from server.engine.imageio import UploadError, load_upload
    from server.engine.latent_io import save_latent
    from server.engine.media import make_grid, upscale
    from server.engine.project import ProjectOptions, ProjectSession, psnr_uint8

    if args.out.suffix.lower() != ".safetensors":
        return _fail(f"--out must end in .safetensors, got {args.out.name!r}")
    if args.preview is not None and args.preview.suffix.lower() != ".png":
        return _fail(f"--preview must end in .png, got {args.preview.name!r}")
    if args.steps < 1 or args.pti < 0:
        return _fail("--steps must be >= 1 and --pti >= 0")
    if args.pti and args.method != "optimize":
        return _fail("--pti needs --method optimize")
    if not args.image.is_file():
        return _fail(f"no such file: {args.image}")
    try:
        data = args.image.read_bytes()
    except OSError as e:
        return _fail(f"cannot read {args.image}: {e}")
    G = load_model(args).eval().requires_grad_(False)
    try:
        target = load_upload(data, G.img_resolution)
    except UploadError as e:
        return _fail(f"{args.image}: {e}")

    t0 = time.perf_counter()
    w_init, init_from = None, "w_avg"
    try:
        enc = load_encoder(args.encoder, G)
        w_init, init_from = encode(enc, target), "encoder"
    except EncoderError as e:
        if args.method == "encoder" or args.encoder is not None:
            return _fail(str(e))
        print(f"livedrag invert: note: {e}; starting from w_avg", file=sys.stderr)
    t_enc = time.perf_counter() - t0

    report: dict = {"image": str(args.image), "method": args.method, "init": init_from}
    tuned = None
    if args.method == "encoder":
        from server.engine.generator import to_uint8

        w = w_init
        result = to_uint8(G.synthesis(w, noise_mode="const")[0])[0]
        report.update(steps=0, seconds=round(t_enc, 4))
    else:
        kw = {"max_steps": args.steps, "pti_steps": args.pti}
        if args.lr is not None:
            kw["lr"] = args.lr
        session = ProjectSession(G, target, w_init, ProjectOptions(**kw))
        bar = progress(total=args.steps + args.pti, desc="invert")
        while not session.done:
            r = session.step()
            bar.update(1)
            bar.set_postfix(loss=f"{r.loss:.4f}")
        bar.close()
        w = session.latent()
        result = session.render()
        report.update(
            steps=session.w_steps, pti_steps=session.pti_done, reason=session.reason,
            seconds=round(time.perf_counter() - t0, 3),
        )  # fmt: skip
        if args.pti:
            tuned = session.generator
    psnr = psnr_uint8(result, target)
    report["psnr_db"] = round(psnr, 2)
    extra = {k: report[k] for k in ("method", "init", "steps", "psnr_db")}
    extra["source"] = args.image.name
    if tuned is not None:
        gpath = args.tuned_generator or args.out.with_name(args.out.stem + ".generator.safetensors")
        save_generator(tuned.cpu(), gpath, extra_meta={"tuned_for": args.image.name})
        extra["tuned_generator"] = gpath.name
        report["tuned_generator"] = str(gpath)
    save_latent(args.out, w, G.cfg.name, extra)
    report["out"] = str(args.out)
    if args.preview is not None:
        args.preview.parent.mkdir(parents=True, exist_ok=True)
        scale = max(1, 256 // G.img_resolution)
        Image.fromarray(upscale(make_grid([target, result], cols=2, pad=2), scale)).save(args.preview)
        report["preview"] = str(args.preview)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}: {report['method']} from {init_from}, PSNR {psnr:.2f} dB, {report['seconds']} s")
    return 0
