"""Evaluate a SynthFaces generator and draw the pictures of docs/model.md.

Writes, under --out-dir (default docs/img):
  generator_grid.png         8x8 samples (seeds 0..63, truncation 0.7; 1.0 for a distilled
                             model, whose seeds then match the renders beside), upscaled 2x
  generator_renders.png      renders of seeds 0..63 at the same size (the same faces for a
                             generator distilled from the renderer), upscaled 2x
  generator_truncation.png   rows = seeds, columns = psi 0, 0.25, 0.5, 0.7, 0.85, 1.0
  generator_fid_curve.png    FID-style score of every training snapshot (--run) vs kimg
  drag_*.gif                 a few DragGAN drags on generated faces (handles from the detector)
and a JSON report (--json, default docs/generator_eval.json) with:
  * the FID-style score (Frechet distance on the SynthFaces landmark detector's pooled features;
    NOT Inception FID) of generated (psi 1) vs held-out rendered images, next to the floor
    (rendered vs rendered, disjoint seeds) and the ceiling (the untrained generator);
  * the fraction of generated faces whose detected landmarks pass geometric sanity checks;
  * the landmark spread: the mean distance between the same landmark on two faces (generated at
    psi 1 and 0.7, rendered), and along the snapshots (generator_spread_curve.png): the drag
    benchmark's `pairs` drags are that long;
  * sharpness against renders (server/synthfaces/sharpness.py): the mean of the top 2% Sobel
    magnitudes (edges, goal >= 0.95) and the median Sobel magnitude (flat areas, goal <= 1.5);
  * for a generator distilled from the renderer (its z names a render), the PSNR of each
    generated image against the render of its own latent.

    .venv/bin/python scripts/eval_generator.py --run runs/sf64 --n 2000
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.engine.checkpoint import load_generator  # noqa: E402
from server.engine.drag import DragSession  # noqa: E402
from server.engine.drag_options import DragOptions  # noqa: E402
from server.engine.generator import Generator, to_uint8  # noqa: E402
from server.engine.media import draw_points, make_grid, upscale, write_gif  # noqa: E402
from server.synthfaces import N_SLOTS, params_from_z, render, render_batch  # noqa: E402
from server.synthfaces.demos import DEMO_DRAGS  # noqa: E402
from server.synthfaces.detector import load_detector  # noqa: E402
from server.synthfaces.fid import frechet_distance  # noqa: E402
from server.synthfaces.landmarks import geometric_sanity, pair_spread  # noqa: E402
from server.synthfaces.sharpness import sharpness_ratios  # noqa: E402

HELD_OUT_SEED = 10_000_000  # training used renderer seeds [0, N); evaluation seeds start here


def latents(n: int, z_dim: int, seed: int = 0) -> torch.Tensor:
    """n latents z [n, z_dim] drawn with torch.Generator(seed) on the CPU."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def generate(G: Generator, n: int, seed: int = 0, psi: float = 1.0, batch: int = 64) -> np.ndarray:
    """n images uint8 [n, H, W, 3] from ``latents(n, G.z_dim, seed)``."""
    z = latents(n, G.z_dim, seed)
    out = []
    for i in range(0, n, batch):
        ws = G.mapping(z[i : i + batch], truncation_psi=psi)
        img, _ = G.synthesis(ws, noise_mode="const")
        out.append(to_uint8(img))
    return np.concatenate(out)


def is_distilled(G: Generator) -> bool:
    """A generator whose z names a render (scripts/train_distill.py): z [N_SLOTS], distill provenance."""
    return G.z_dim == N_SLOTS and G.cfg.extra.get("latent") == "synthfaces.params_from_z"


def psnr_vs_renders(G: Generator, images: np.ndarray, seed: int) -> dict:
    """PSNR of generated images against the renders of their own latents (distilled models only)."""
    z = latents(len(images), G.z_dim, seed).double().numpy()
    real = np.stack([render(params_from_z(zi), G.img_resolution)[0] for zi in z])
    mse = ((images.astype(np.float64) - real.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    db = 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))
    return {
        "mean_db": float(db.mean()),
        "median_db": float(np.median(db)),
        "p10_db": float(np.percentile(db, 10)),
    }


def line_plot(xs: list[float], ys: list[float], refs: dict[str, float], path: Path, title: str) -> None:
    """A small dependency-free line chart (Pillow): the curve plus dashed reference lines."""
    W, H, L, R, T, B = 640, 360, 60, 20, 36, 44
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    allv = ys + list(refs.values())
    lo, hi = 0.0, max(allv) * 1.08 if allv else 1.0
    x0, x1 = (min(xs), max(xs)) if xs else (0, 1)
    x1 = x1 if x1 > x0 else x0 + 1

    def px(x: float, y: float) -> tuple[float, float]:
        return L + (x - x0) / (x1 - x0) * (W - L - R), H - B - (y - lo) / (hi - lo) * (H - T - B)

    d.rectangle([L, T, W - R, H - B], outline="#888")
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        _, y = px(x0, v)
        d.line([L - 4, y, L, y], fill="#888")
        d.text((4, y - 6), f"{v:.1f}", fill="#333")
    for k in range(5):
        v = x0 + (x1 - x0) * k / 4
        x, _ = px(v, lo)
        d.line([x, H - B, x, H - B + 4], fill="#888")
        d.text((x - 12, H - B + 8), f"{v:.0f}", fill="#333")
    d.text((W // 2 - 20, H - 18), "kimg", fill="#333")
    d.text((L, 10), title, fill="#000")
    colours = ["#2a9d8f", "#e76f51", "#8338ec"]
    for (name, v), c in zip(refs.items(), colours, strict=False):
        _, y = px(x0, v)
        for xx in range(L, W - R, 12):
            d.line([xx, y, min(xx + 6, W - R), y], fill=c, width=2)
        d.text((W - R - 200, y - 14), f"{name}: {v:.2f}", fill=c)
    pts = [px(x, y) for x, y in zip(xs, ys, strict=True)]
    if len(pts) > 1:
        d.line(pts, fill="#1d3557", width=3)
    for x, y in pts:
        d.ellipse([x - 3, y - 3, x + 3, y + 3], fill="#1d3557")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


GIF_FRAMES = 48  # a demo GIF's frames (evenly spaced over the drag's steps)


def drag_demos(G: Generator, detector, out_dir: Path, steps: int) -> list[dict]:
    """A few drags on generated faces, with handles placed by the landmark detector."""
    results = []
    for demo in tqdm(DEMO_DRAGS, desc="drag demos"):
        name, seed = demo.name, demo.seed
        ws = G.ws_from_seed(seed)
        img, _ = G.synthesize(ws)
        handles, targets = demo.points(detector.detect(to_uint8(img))[0], G.img_resolution)
        sess = DragSession(G, ws, handles, targets, options=DragOptions(max_steps=steps))
        frames, points = [to_uint8(img)[0]], [(handles, targets)]
        t0 = time.perf_counter()
        while True:
            r = sess.step()
            frames.append(r.frame)
            points.append((r.handles, targets))
            if r.done:
                break
        secs = time.perf_counter() - t0
        # the GIF: at most GIF_FRAMES frames (first and last kept) about 256 px wide, the result held
        keep = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), GIF_FRAMES)).round().astype(int))
        gif_frames = [frames[i] for i in keep] + [frames[-1]] * 8
        gif_points = [points[i] for i in keep] + [points[-1]] * 8
        gif_scale = max(1, 256 // G.img_resolution)
        write_gif(gif_frames, out_dir / f"drag_{name}.gif", fps=12, points=gif_points, scale=gif_scale)
        Image.fromarray(
            np.concatenate(
                [draw_points(frames[0], handles, targets, scale=4), upscale(frames[-1], 4)], axis=1
            )
        ).save(out_dir / f"drag_{name}.png")
        dist = [float(np.hypot(h[0] - t[0], h[1] - t[1])) for h, t in zip(r.handles, targets, strict=True)]
        results.append(
            {
                "name": name,
                "seed": seed,
                "steps": r.step,
                "reason": str(r.reason.value if hasattr(r.reason, "value") else r.reason),
                "seconds": round(secs, 3),
                "final_distance_px": dist,
            }
        )
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="generator (default: the embedded model)")
    p.add_argument("--run", default=None, help="training run dir with snapshots/ for the FID curve")
    p.add_argument("--n", type=int, default=2000, help="images per set for the FID-style score")
    p.add_argument("--out-dir", default=str(ROOT / "docs" / "img"))
    p.add_argument("--json", default=str(ROOT / "docs" / "generator_eval.json"))
    p.add_argument("--drag-steps", type=int, default=80)
    p.add_argument("--no-drags", action="store_true", help="skip the demo drags (scores and grids only)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    G = load_generator(args.checkpoint)
    det = load_detector()
    res = G.img_resolution
    t_start = time.perf_counter()

    # pictures
    grid_psi = 1.0 if is_distilled(G) else 0.7  # a distilled model's seeds match their renders at psi 1
    grid = make_grid([to_uint8(G.synthesize(G.ws_from_seed(s, grid_psi))[0])[0] for s in range(64)], cols=8)
    Image.fromarray(upscale(grid, 2)).save(out_dir / "generator_grid.png")
    # renders of the same size beside it: of the same seeds where the model distils the renderer
    rgrid = make_grid(list(render_batch(range(64), res)[0]), cols=8)
    Image.fromarray(upscale(rgrid, 2)).save(out_dir / "generator_renders.png")
    psis = [0.0, 0.25, 0.5, 0.7, 0.85, 1.0]
    rows = []
    with torch.no_grad():
        for s in range(6):
            z = G.z_from_seed(s)
            rows += [to_uint8(G.synthesis(G.mapping(z, truncation_psi=q))[0])[0] for q in psis]
    Image.fromarray(upscale(make_grid(rows, cols=len(psis)), 2)).save(out_dir / "generator_truncation.png")

    # FID-style scores
    n = args.n
    print(f"rendering 2 x {n} held-out SynthFaces at {res} px ...")
    real_a = render_batch(range(HELD_OUT_SEED, HELD_OUT_SEED + n), res)[0]
    real_b = render_batch(range(HELD_OUT_SEED + n, HELD_OUT_SEED + 2 * n), res)[0]
    fa, fb = det.features(real_a), det.features(real_b)
    floor = frechet_distance(fa, fb)
    torch.manual_seed(0)
    untrained = Generator(G.cfg).eval()
    ceiling = frechet_distance(det.features(generate(untrained, n)), fa)
    fake = generate(G, n, seed=1)
    fake07 = generate(G, n, seed=1, psi=0.7)
    score = frechet_distance(det.features(fake), fa)
    score_psi07 = frechet_distance(det.features(fake07), fa)
    lm_fake, lm_real = det.detect(fake), det.detect(real_a)
    sane_fake = float(geometric_sanity(lm_fake).mean())
    sane_real = float(geometric_sanity(lm_real).mean())
    # geometric variety: how far the same landmark lies on two faces (the drag benchmark's
    # no-edit MD); a generator that collapses face geometry makes that benchmark's drags tiny
    even = n - n % 2  # pair_spread pairs faces 2i and 2i + 1
    spread = {
        "generated_psi1": pair_spread(lm_fake[:even]),
        "generated_psi0.7": pair_spread(det.detect(fake07)[:even]),
        "rendered": pair_spread(lm_real[:even]),
    }
    sharp = sharpness_ratios(fake, real_a)
    spread["ratio_psi1"] = spread["generated_psi1"] / spread["rendered"]
    match = psnr_vs_renders(G, fake, seed=1) if is_distilled(G) else None
    print(
        f"sharpness: top-2% Sobel ratio {sharp['edge_ratio']:.3f} (goal >= 0.95), median Sobel ratio "
        f"{sharp['flat_ratio']:.2f} (goal <= 1.5); landmark spread ratio {spread['ratio_psi1']:.3f} "
        f"(goal >= 0.9); FID-style / floor {score / floor:.1f}x (goal <= 5x)"
        + (f"; PSNR vs own render {match['mean_db']:.2f} dB" if match else "")
    )
    print(
        f"FID-style: generated {score:.2f} (psi 0.7: {score_psi07:.2f}), floor {floor:.2f}, "
        f"untrained {ceiling:.2f}; sane landmarks: generated {sane_fake:.1%}, rendered {sane_real:.1%}; "
        f"landmark spread (px): generated {spread['generated_psi1']:.2f} "
        f"(psi 0.7: {spread['generated_psi0.7']:.2f}), rendered {spread['rendered']:.2f}"
    )

    curve = []
    if args.run:
        snaps = sorted(Path(args.run, "snapshots").glob("g_ema_*.safetensors"))
        for sp in tqdm(snaps, desc="snapshots"):
            kimg = int(re.findall(r"(\d+)", sp.stem)[-1])
            Gs = load_generator(sp)
            imgs = generate(Gs, n, seed=1)
            curve.append(
                (kimg, frechet_distance(det.features(imgs), fa), pair_spread(det.detect(imgs)[:even]))
            )
        if curve:
            line_plot(
                [c[0] for c in curve],
                [c[1] for c in curve],
                {"untrained": ceiling, "rendered vs rendered": floor},
                out_dir / "generator_fid_curve.png",
                "FID-style score (SynthFaces detector features) vs kimg",
            )
            line_plot(
                [c[0] for c in curve],
                [c[2] for c in curve],
                {"rendered": spread["rendered"]},
                out_dir / "generator_spread_curve.png",
                "landmark spread between two faces (px, psi 1) vs kimg",
            )

    drags = [] if args.no_drags else drag_demos(G, det, out_dir, args.drag_steps)
    report = {
        "checkpoint": str(args.checkpoint or "embedded"),
        "config": G.cfg.to_dict(),
        "n": n,
        "fid_style": {
            "generated_psi1": score,
            "generated_psi0.7": score_psi07,
            "floor_rendered_vs_rendered": floor,
            "ceiling_untrained": ceiling,
            "feature_network": "SynthFaces landmark detector (pooled)",
        },
        "fid_over_floor": score / floor,
        "sharpness": sharp,
        "psnr_vs_render": match,
        "landmark_sanity": {"generated": sane_fake, "rendered": sane_real},
        "landmark_spread_px": spread,
        "curve": [{"kimg": k, "fid_style": v, "landmark_spread_px": sp} for k, v, sp in curve],
        "drags": drags,
        "seconds": round(time.perf_counter() - t_start, 1),
        "threads": args.threads,
    }
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(
        json.dumps(
            {
                k: report[k]
                for k in ("fid_style", "fid_over_floor", "sharpness", "psnr_vs_render", "landmark_spread_px")
            },
            indent=2,
        )
    )
    for d in drags:
        print(f"drag {d['name']}: {d['reason']} in {d['seconds']} s, final distance {d['final_distance_px']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
