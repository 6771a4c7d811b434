"""Benchmark projection: reconstruction PSNR, perceptual distance and time for three methods.

Methods: ``encoder`` (one forward pass), ``optimize`` (projection steps from w_avg) and
``encoder+optimize`` (steps from the encoder's estimate). Images: N rendered SynthFaces faces
(``render_batch``, seeds from 5 000 000 on, which neither the generator's training nor the
encoder's saw: the encoder is trained on generated images only) and N generated images (seeds
from 10**7 on, truncation psi 0.7, never used by the encoder's training, which draws random z).

Per image and method: final PSNR (dB) and PerceptualDistance of the result, wall seconds, the
PSNR of the last frame within ``--budget`` seconds (default 2 s, counting the encoder pass), and the
seconds until the first frame at >= ``--goal`` dB (25 dB). Step frames are the images of each
step's forward pass, so PSNR tracking costs no extra synthesis.

    python scripts/bench_invert.py --threads 2 --n 8 --steps 100 --json runs/bench_invert.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.engine.checkpoint import load_generator  # noqa: E402
from server.engine.encoder import encode, load_encoder  # noqa: E402
from server.engine.generator import to_uint8  # noqa: E402
from server.engine.perceptual import PerceptualDistance  # noqa: E402
from server.engine.project import ProjectOptions, ProjectSession, psnr_uint8  # noqa: E402
from server.synthfaces import render_batch  # noqa: E402

METHODS = ("encoder", "optimize", "encoder+optimize")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=8, help="images per set")
    p.add_argument("--steps", type=int, default=100, help="projection step cap")
    p.add_argument("--budget", type=float, default=2.0, help="seconds for the 'PSNR within budget' column")
    p.add_argument("--goal", type=float, default=25.0, help="dB for the 'seconds to goal' column")
    p.add_argument("--checkpoint", default=None, help="generator (default: embedded SynthFaces model)")
    p.add_argument("--encoder", default=None, help="encoder file (default: the shipped one)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def image_sets(G, n: int) -> dict[str, np.ndarray]:
    rendered, _ = render_batch(range(5_000_000, 5_000_000 + n), size=G.img_resolution)
    with torch.no_grad():
        ws = torch.cat([G.ws_from_seed(10**7 + i, 0.7) for i in range(n)])
        generated = to_uint8(G.synthesis(ws, noise_mode="const")[0])
    return {"rendered": rendered, "generated": generated}


def run_one(G, enc, target: np.ndarray, method: str, args, perceptual) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    w_init = encode(enc, target) if method != "optimize" else None
    t_enc = time.perf_counter() - t0
    curve: list[tuple[float, float]] = []  # (seconds since start, PSNR of the frame)
    steps_to_goal = None
    if method == "encoder":
        with torch.no_grad():
            frame = to_uint8(G.synthesis(w_init, noise_mode="const")[0])[0]
        seconds = time.perf_counter() - t0
        curve.append((seconds, psnr_uint8(frame, target)))
        steps = 0
    else:
        s = ProjectSession(G, target, w_init, ProjectOptions(max_steps=args.steps), perceptual=perceptual)
        while not s.done:
            r = s.step()
            curve.append((time.perf_counter() - t0, psnr_uint8(r.frame, target)))
            if steps_to_goal is None and curve[-1][1] >= args.goal:
                steps_to_goal = r.step - 1  # the frame shows the latent before this step's update
        frame, seconds, steps = s.render(), time.perf_counter() - t0, s.w_steps
    cpu = time.process_time() - c0
    within = [p for t, p in curve if t <= args.budget]
    reach = [t for t, p in curve if p >= args.goal]
    with torch.no_grad():
        a = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 127.5 - 1
        b = torch.from_numpy(target).permute(2, 0, 1)[None].float() / 127.5 - 1
        dist = float(perceptual(a.to(args.device), b.to(args.device))[0])
    return {
        "psnr": psnr_uint8(frame, target),
        "perceptual": dist,
        "seconds": seconds,
        "cpu_seconds": cpu,  # process CPU time (all threads): less sensitive to other load than wall time
        "encoder_seconds": t_enc,
        "steps_to_goal": steps_to_goal if method != "encoder" else (0 if curve[-1][1] >= args.goal else None),
        "steps": steps,
        "psnr_within_budget": within[-1] if within else float("nan"),  # the last frame in time
        "seconds_to_goal": reach[0] if reach else None,
    }


def summarise(rows: list[dict], goal: float) -> dict:
    reached = [r["seconds_to_goal"] for r in rows if r["seconds_to_goal"] is not None]
    return {
        "psnr_mean": statistics.fmean(r["psnr"] for r in rows),
        "perceptual_mean": statistics.fmean(r["perceptual"] for r in rows),
        "seconds_median": statistics.median(r["seconds"] for r in rows),
        "steps_median": statistics.median(r["steps"] for r in rows),
        "cpu_seconds_per_step_median": statistics.median(r["cpu_seconds"] / max(1, r["steps"]) for r in rows),
        "steps_to_goal_median": statistics.median(s)
        if (s := [r["steps_to_goal"] for r in rows if r["steps_to_goal"] is not None])
        else None,
        # images without a frame inside the budget (a stalled first step on a loaded machine) are skipped
        "psnr_within_budget_mean": statistics.fmean(v)
        if (
            v := [r["psnr_within_budget"] for r in rows if r["psnr_within_budget"] == r["psnr_within_budget"]]
        )
        else float("nan"),
        "reached_goal": f"{len(reached)}/{len(rows)}",
        "seconds_to_goal_median": statistics.median(reached) if reached else None,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    G = load_generator(args.checkpoint, device=args.device).eval().requires_grad_(False)
    enc = load_encoder(args.encoder, G)
    perceptual = PerceptualDistance().to(args.device)
    sets = image_sets(G, args.n)
    # warm-up (allocator, first-call overheads) on an image outside the sets
    run_one(
        G,
        enc,
        sets["generated"][0],
        "encoder+optimize",
        argparse.Namespace(**{**vars(args), "steps": 3}),
        perceptual,
    )
    results: dict = {}
    bar = tqdm(total=len(sets) * len(METHODS) * args.n, desc="invert", disable=args.no_progress)
    for set_name, images in sets.items():
        for method in METHODS:
            rows = []
            for img in images:
                rows.append(run_one(G, enc, img, method, args, perceptual))
                bar.update(1)
            results[f"{set_name}/{method}"] = {"summary": summarise(rows, args.goal), "images": rows}
    bar.close()
    head = f"{'set':<10} {'method':<17} {'PSNR dB':>8} {'percept':>8} {'median s':>9} {'steps':>6} "
    head += f"{f'PSNR@{args.budget:g}s':>9} {f'>={args.goal:g}dB':>8} {'s to goal':>9} "
    head += f"{'steps to goal':>13} {'cpu s/step':>10}"
    print(head)
    for key, val in results.items():
        s = val["summary"]
        set_name, method = key.split("/")
        stg = f"{s['seconds_to_goal_median']:.2f}" if s["seconds_to_goal_median"] is not None else "-"
        ntg = f"{s['steps_to_goal_median']:g}" if s["steps_to_goal_median"] is not None else "-"
        print(
            f"{set_name:<10} {method:<17} {s['psnr_mean']:>8.2f} {s['perceptual_mean']:>8.4f} "
            f"{s['seconds_median']:>9.3f} {s['steps_median']:>6.0f} {s['psnr_within_budget_mean']:>9.2f} "
            f"{s['reached_goal']:>8} {stg:>9} {ntg:>13} {s['cpu_seconds_per_step_median']:>10.3f}"
        )
    if args.json:
        out = {
            "args": vars(args),
            "machine": {
                "platform": platform.platform(),
                "cpu_count": torch.get_num_threads(),
                "torch": torch.__version__,
                "device": args.device,
            },
            "results": results,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
