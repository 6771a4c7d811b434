#!/usr/bin/env python
"""Does a drag arrive because of where it ends, or because point tracking looked often?

DragGAN's optimiser ends a drag ``reached`` at the first step at which point tracking finds every
handle within the stop distance; it looks 40-200 times, a predict drag about 12. This script
separates the two (docs/predictor.md, "The optimiser's path read 13 times"):

  * **replay**: each edit is run by the optimiser to its end, keeping the latent of every step;
    its path is then read again by point tracking only at some steps (every k-th, or n evenly
    spaced, the last latent always included), each reading tracking from the one before with the
    drag's own templates and the product's lost and stop rules (server/engine/stop_rules.py).
    ``1`` (every step) reproduces the optimiser's own ``reached``; ``n12`` (12 evenly spaced and the
    last: 13 readings) is a perfect imitator of the teacher's path taking a predict drag's steps.
  * **end states**: for the optimiser and the predictor, each landmark at the end of each drag:
    point tracking's match ratio (best-match distance / the template's spread), its distance to
    the target by tracking and by the landmark detector re-run on the final image.

Edits are ``bench_drag.py --protocol pairs``'s (the landmarks of face A dragged onto face B's,
faces ``--seed`` + 2i and + 2i + 1), five landmarks by default; use validation seeds.

    .venv/bin/python scripts/replay_teacher.py --seed 100000 --pairs 20 --json runs/replay.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

READINGS = ("1", "4", "8", "16", "n12", "n6")


def reading_steps(n_steps: int, spec: str) -> list[int]:
    """The steps of an ``n_steps``-step path read by ``spec``: "k" every k-th step from 0, "nK" K
    steps evenly spaced from 0; the last step is always read. -> sorted step indices."""
    if spec.startswith("n"):
        count = int(spec[1:])
        if count < 1:
            raise ValueError(f"reading spec {spec!r}: need at least one reading")
        every = max(1, math.ceil(n_steps / count))
    else:
        every = int(spec)
        if every < 1:
            raise ValueError(f"reading spec {spec!r}: the stride must be >= 1")
    steps = list(range(0, n_steps, every))
    if steps[-1] != n_steps - 1:
        steps.append(n_steps - 1)
    return steps


class Replay(NamedTuple):
    reason: str  # "reached", "lost" or "end" (the path ran out first)
    readings: int
    handles: torch.Tensor  # [K, 2] the last tracked positions


def replay(G, latents: list[torch.Tensor], steps: list[int], *args, **kwargs) -> Replay:
    """Read the path ``latents`` at ``steps`` (see ``replay_many``)."""
    return replay_many(G, latents, {"": steps}, *args, **kwargs)[""]


def replay_many(
    G,
    latents: list[torch.Tensor],
    readings: dict[str, list[int]],
    handles: torch.Tensor,
    targets: torch.Tensor,
    templates: torch.Tensor,
    spread: torch.Tensor,
    *,
    r2: int,
    lost_ratio: float | None,
    stop_distance: float,
    feature_blocks: tuple[int, ...],
    noise_mode: str = "const",
) -> dict[str, Replay]:
    """Read the path ``latents`` (each [1, num_ws, D]) at each entry's steps of ``readings`` with
    point tracking from ``handles`` [K, 2], as a session would at those steps, until the stop rule
    ends it. Each latent is rendered once, for every reading that looks at it."""
    from server.engine.stop_rules import arrival, track_and_flag
    from server.engine.tracking import FeatureField

    size = (G.img_resolution, G.img_resolution)
    state = {
        name: (handles.float().clone(), torch.zeros(len(handles), dtype=torch.bool), 0) for name in readings
    }
    done: dict[str, Replay] = {}
    wanted = {name: set(steps) for name, steps in readings.items()}
    for j in sorted(set().union(*wanted.values())):
        looking = [name for name in readings if name not in done and j in wanted[name]]
        if not looking:
            continue
        with torch.no_grad():
            _, feats = G.synthesis(latents[j], noise_mode=noise_mode, feature_blocks=feature_blocks)
        field = FeatureField([feats[b][0:1] for b in feature_blocks], size)
        for name in looking:
            hs, lost, n = state[name]
            hs, _, lost = track_and_flag(field, templates, spread, hs, lost, r2, lost_ratio)
            state[name] = (hs, lost, n + 1)
            reason = arrival((hs - targets).norm(dim=1), lost, stop_distance)
            if reason is not None:
                done[name] = Replay(reason, n + 1, hs)
    return {name: done.get(name) or Replay("end", state[name][2], state[name][0]) for name in readings}


def optimiser_path(G, w, handles, targets, max_steps: int):
    """Run DragGAN's optimiser to its end. -> (session, last StepResult, the latent of every step)."""
    from server.engine.drag import DragSession
    from server.engine.drag_options import DragOptions

    s = DragSession(G, w, handles, targets, options=DragOptions(max_steps=max_steps))
    latents = []
    r = None
    while not s.done:
        latents.append(s.latent())
        r = s.step()
    return s, r, latents


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=100000, help="faces seed + 2i, seed + 2i + 1 (validation)")
    p.add_argument("--pairs", type=int, default=20, help="face pairs (default 20)")
    p.add_argument("--points", default="5", help="landmark group, as bench_drag.py's --points (default 5)")
    p.add_argument(
        "--readings", nargs="+", default=list(READINGS), help=f"reading specs (default {READINGS})"
    )
    p.add_argument("--max-steps", type=int, default=200, help="the optimiser's step cap (default 200)")
    p.add_argument("--no-predict", action="store_true", help="skip the predictor's end states")
    p.add_argument("--checkpoint", default=None, help="generator (default: the shipped one)")
    p.add_argument("--predictor", default=None, help="predictor file (default: the shipped one)")
    p.add_argument("--trunc", type=float, default=0.7, help="truncation psi (default 0.7)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="write every edit's figures here")
    p.add_argument("--no-progress", action="store_true")
    return p


def end_state(result, targets: np.ndarray, detected: np.ndarray) -> dict:
    tracked = np.linalg.norm(np.asarray(result.handles) - targets, axis=1)
    return {
        "reason": result.reason,
        "steps": result.step,
        "match": [float(v) for v in result.match],
        "tracked_px": tracked.tolist(),
        "detected_px": detected.tolist(),
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for spec in args.readings:
        reading_steps(10, spec)  # refuse a bad spec before any work
    torch.set_num_threads(args.threads)
    from bench_drag import group_indices

    from server.cli.common import progress
    from server.engine.checkpoint import load_generator
    from server.engine.generator import to_uint8
    from server.engine.predict_session import PredictSession
    from server.engine.predictor_io import load_predictor
    from server.synthfaces import LANDMARK_NAMES
    from server.synthfaces.detector import load_detector

    G = load_generator(args.checkpoint)
    detector = load_detector(None)
    model = None if args.no_predict else load_predictor(args.predictor, G=G)
    res, n = G.img_resolution, args.pairs
    idx = group_indices(args.points)
    with torch.no_grad():
        ws = torch.cat([G.ws_from_seed(args.seed + i, truncation_psi=args.trunc) for i in range(2 * n)])
        imgs = np.concatenate([to_uint8(G.synthesis(ws[i : i + 64])[0]) for i in range(0, 2 * n, 64)])
    lms = detector.detect(imgs)
    edits = []
    for i in progress(range(n), desc="edits", disable=True if args.no_progress else None):
        handles = np.clip(lms[2 * i][idx] - 0.5, 0, res - 1)  # session pixels: centres on integers
        targets = np.clip(lms[2 * i + 1][idx] - 0.5, 0, res - 1)
        w = ws[2 * i : 2 * i + 1]

        def detected(frame: np.ndarray, targets: np.ndarray = targets) -> np.ndarray:
            return np.linalg.norm(detector.detect(frame[None])[0][idx] - (targets + 0.5), axis=1)

        s, r, latents = optimiser_path(G, w, handles, targets, args.max_steps)
        edit = {"pair": i, "optimize": end_state(r, targets, detected(r.frame)), "replay": {}}
        tgt = torch.as_tensor(targets, dtype=torch.float32)
        replays = replay_many(
            G,
            latents,
            {spec: reading_steps(len(latents), spec) for spec in args.readings},
            torch.as_tensor(handles, dtype=torch.float32),
            tgt,
            s._templates,
            s._spread,
            r2=s.radii[1],
            lost_ratio=s.options.lost_ratio,
            stop_distance=s.stop_distance,
            feature_blocks=s.feature_blocks,
            noise_mode=s.options.noise_mode,
        )
        for spec, rp in replays.items():
            edit["replay"][spec] = {"reason": rp.reason, "readings": rp.readings}
        if model is not None:
            ps = PredictSession(G, w, handles, targets, model=model)
            while not ps.done:
                pr = ps.step()
            edit["predict"] = end_state(pr, targets, detected(pr.frame))
        edits.append(edit)

    def share(xs) -> float:
        return float(np.mean(xs)) if len(xs) else float("nan")

    summary = {"optimize_reached": share([e["optimize"]["reason"] == "reached" for e in edits]), "replay": {}}
    if model is not None:
        summary["predict_reached"] = share([e["predict"]["reason"] == "reached" for e in edits])
    print(f"{n} pairs, {args.points} landmarks, seed {args.seed}, {res} px")
    print(f"optimiser reached {summary['optimize_reached']:.0%}", end="")
    print(f", predictor {summary['predict_reached']:.0%}" if model is not None else "")
    print("replay of the optimiser's path   readings (median)   reached")
    for spec in args.readings:
        got = [e["replay"][spec] for e in edits]
        reached = share([g["reason"] == "reached" for g in got])
        reads = float(np.median([g["readings"] for g in got]))
        summary["replay"][spec] = {"reached": reached, "readings_median": reads}
        label = f"every {spec}" if not spec.startswith("n") else f"{spec[1:]} evenly spaced"
        print(f"  {label:30s} {reads:18.0f}   {reached:6.0%}")
    names = [LANDMARK_NAMES[j] for j in idx]
    summary["end_states"] = {}
    print("end states: landmark, then per method: match ratio, tracked px, detected px (means)")
    for m in ("optimize", "predict") if model is not None else ("optimize",):
        per = {k: np.array([e[m][k] for e in edits]) for k in ("match", "tracked_px", "detected_px")}
        summary["end_states"][m] = {
            k: dict(zip(names, v.mean(0).tolist(), strict=True)) for k, v in per.items()
        }
        print(f"  {m}")
        for j, name in enumerate(names):
            vals = ", ".join(f"{per[k][:, j].mean():.2f}" for k in ("match", "tracked_px", "detected_px"))
            print(f"    {name:14s} {vals}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"args": vars(args) | {"json": str(args.json)}, "summary": summary, "edits": edits}
        args.json.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
