"""The optimiser and the learned predictor side by side on the same drags, in time (docs/predictor.md).

For each named landmark drag of ``server.synthfaces.demos`` (smile, open mouth, turn head, raise
brows) on the embedded model, run DragGAN's optimisation (``DragSession``, the paper's settings)
and the shipped predictor (``PredictSession`` with its recommended options) one step at a time,
timing every step in process CPU time. Writes, under --out-dir (default docs/img):

  predict_vs_optimize_<name>.gif  both drags played on one clock (CPU time): each panel shows the
                                  latest frame its method had produced at that moment
  predict_vs_optimize_<name>.png  start with handles (red) and targets (blue) | DragGAN | predictor

and a JSON report (--json): per method, steps, CPU seconds and the final distance of each moved
landmark to its target, as point tracking saw it and as the landmark detector finds it again.

    .venv/bin/python scripts/demo_predict.py --threads 1
"""

from __future__ import annotations

import argparse
import json
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
from server.engine.generator import to_uint8  # noqa: E402
from server.engine.media import draw_points, upscale  # noqa: E402
from server.engine.predict_session import PredictSession  # noqa: E402
from server.engine.predictor_io import load_predictor  # noqa: E402
from server.synthfaces.demos import DEMO_DRAGS  # noqa: E402
from server.synthfaces.detector import load_detector  # noqa: E402

SCALE = 3


def run(session) -> tuple[list[np.ndarray], list[list], list[float]]:
    """Step ``session`` to its end: frames, tracked handles and cumulative CPU seconds per step."""
    frames, handles, clock = [], [], []
    c0 = time.process_time()
    while not session.done:
        r = session.step()
        frames.append(r.frame)
        handles.append(r.handles)
        clock.append(time.process_time() - c0)
    return frames, handles, clock


def panel(frame: np.ndarray, handles, targets, caption: str) -> np.ndarray:
    img = Image.fromarray(draw_points(frame, handles, targets, scale=SCALE))
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, img.width, 13], fill=(0, 0, 0))
    d.text((3, 1), caption, fill=(255, 255, 255))
    return np.asarray(img)


def latest(clock: list[float], t: float) -> int:
    """Index of the last step finished by time t (-1: none yet)."""
    return int(np.searchsorted(np.asarray(clock), t, side="right")) - 1


def write_race(runs: dict, start, handles, targets, frame_s: float, path: Path) -> None:
    """One GIF frame per ``frame_s`` CPU seconds: each panel shows its method's latest frame then."""
    end = max(clock[-1] for _, _, clock in runs.values())
    gif = []
    for t in [*np.arange(0.0, end + frame_s, frame_s), *[end] * 10]:  # then hold the end
        row = []
        for name, (frames, tracked, clock) in runs.items():
            i = latest(clock, t)
            f, h = (start, handles) if i < 0 else (frames[i], tracked[i])
            ms = 1000 * clock[i] if i >= 0 else 0.0
            row.append(panel(f, h, targets, f"{name}: {i + 1} steps, {ms:.0f} ms"))
        gif.append(Image.fromarray(np.concatenate(row, axis=1)))
    gif[0].save(path, save_all=True, append_images=gif[1:], duration=120, loop=0, optimize=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "img")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument(
        "--max-steps", type=int, default=200, help="optimiser budget (default 200, the benchmark's)"
    )
    p.add_argument(
        "--frame-ms", type=float, default=150.0, help="CPU milliseconds per GIF frame (default 150)"
    )
    p.add_argument(
        "--gif",
        nargs="*",
        default=["turn_head"],
        help="demos to animate (default: turn_head; the GIFs are large); the PNGs are always written",
    )
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    unknown = sorted(set(args.gif) - {d.name for d in DEMO_DRAGS})
    if unknown:
        p.error(f"--gif {unknown}: not among the demos {[d.name for d in DEMO_DRAGS]}")
    torch.set_num_threads(args.threads)
    G = load_generator()
    model = load_predictor(G=G)
    detector = load_detector()
    report = []
    for demo in tqdm(DEMO_DRAGS, desc="demo drags"):
        with torch.no_grad():
            ws = G.ws_from_seed(demo.seed, truncation_psi=0.7)
            start = to_uint8(G.synthesis(ws)[0])[0]
        handles, targets = demo.points(detector.detect(start[None])[0], G.img_resolution)
        runs = {
            "DragGAN": run(
                DragSession(G, ws, handles, targets, options=DragOptions(max_steps=args.max_steps))
            ),
            "predictor": run(PredictSession(G, ws, handles, targets, model=model)),
        }
        args.out_dir.mkdir(parents=True, exist_ok=True)
        if demo.name in args.gif:
            write_race(
                runs,
                start,
                handles,
                targets,
                args.frame_ms / 1000,
                args.out_dir / f"predict_vs_optimize_{demo.name}.gif",
            )
        still = [draw_points(start, handles, targets, scale=SCALE)] + [
            upscale(frames[-1], SCALE) for frames, _, _ in runs.values()
        ]
        Image.fromarray(np.concatenate(still, axis=1)).save(
            args.out_dir / f"predict_vs_optimize_{demo.name}.png"
        )
        entry = {"name": demo.name, "seed": demo.seed}
        goal = np.asarray(targets)
        entry["start_distance_px"] = np.linalg.norm(np.asarray(handles) - goal, axis=1).round(2).tolist()
        for name, (frames, tracked, clock) in runs.items():
            found = detector.detect(frames[-1][None])[0][demo.indices]  # re-detected moved landmarks
            entry[name] = {
                "steps": len(clock),
                "cpu_seconds": round(clock[-1], 4),
                "tracked_distance_px": np.linalg.norm(np.asarray(tracked[-1]) - goal, axis=1)
                .round(2)
                .tolist(),
                "detected_distance_px": np.linalg.norm(found - goal, axis=1).round(2).tolist(),
            }
        report.append(entry)
        o, q = entry["DragGAN"], entry["predictor"]
        tqdm.write(
            f"{demo.name}: DragGAN {o['steps']} steps {o['cpu_seconds']:.2f} s, "
            f"predictor {q['steps']} steps {q['cpu_seconds']:.3f} s"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"threads": args.threads, "demos": report}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
