#!/usr/bin/env python
"""Calibrate the lost-handle rule (server/engine/stop_rules.py) on generated faces.

Point tracking moves a handle to the pixel of its search window whose feature is nearest to the
handle's template. ``match`` = that nearest distance / the template's spread (the median distance
from the template to its own window where it was placed). This script measures ``match`` on
drags whose handles are face landmarks, so an independent judge says where each handle really
is: the SynthFaces landmark detector, run on every frame. Per handle and step it records ``match``
and the tracking error (tracked position to the detected landmark, px), and sorts the steps into

  * tracked: error <= ``--good`` px (scaled by res / 64): point tracking follows the feature;
  * drifted: error >= ``--bad`` px (scaled): tracking has left the landmark (it jumped to another
    feature or stayed behind);
  * moved off (made on purpose): at a few steps of every drag, the handle's search window is moved
    2-4 window sizes away in a random direction (inside the image), so its feature is not in it:
    a handle that lost its feature, as when it is covered or dragged off the face.

Drags: ``--protocols pairs`` (the benchmark's 5 landmarks of face A onto face B) and ``long``
(scripts/bench_drag.py's landmark groups moved 8-25% of the image), run by ``--methods``
(optimize, predict) with the product's stop rules except ``lost`` (turned off here so that
drags run their course), ``--faces`` faces each (validation seeds ``--seed`` + 2i, none of
them a benchmark face). Prints the distribution of ``match`` per class and, for thresholds, the
share of tracked steps above it (false alarms), the share of drags that would end ``lost`` while
every handle was tracked (drag false alarms), and the share of moved-off and drifted steps caught.

    .venv/bin/python scripts/calibrate_tracking.py --faces 20 --json docs/calibrate_tracking.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5)
PROBE_STEPS = (1, 20)  # moved-off samples after these steps of a drag, and after its last


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faces", type=int, default=20, help="faces per protocol and group (default 20)")
    p.add_argument("--seed", type=int, default=100000, help="face i: seed + 2i (validation)")
    p.add_argument("--methods", nargs="+", choices=("optimize", "predict"), default=["optimize", "predict"])
    p.add_argument("--protocols", nargs="+", choices=("pairs", "long"), default=["pairs", "long"])
    p.add_argument("--max-steps", type=int, default=200, help="step cap of every drag (default 200)")
    p.add_argument("--good", type=float, default=1.5, help="tracked: error <= px at 64 px")
    p.add_argument("--bad", type=float, default=4.0, help="drifted: error >= this, px at 64 px (default 4)")
    p.add_argument("--checkpoint", default=None, help="generator (default: the shipped one)")
    p.add_argument("--predictor", default=None, help="predictor file (default: the shipped one)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="write the summary here")
    return p


def moved_off_match(G, session, blocks, r2: int, rng: np.random.Generator) -> list[float]:
    """``match`` of each handle's template searched in a window 2-4 window sizes away from it (at
    the session's current latent), a handle that has lost its feature by construction."""
    from server.engine.stop_rules import match_ratio
    from server.engine.tracking import FeatureField, track_points

    res = G.img_resolution
    with torch.no_grad():
        _, feats = G.synthesis(session.latent().to(G.mapping.w_avg.device), feature_blocks=blocks)
    field = FeatureField([feats[b] for b in blocks], (res, res))
    handles = torch.tensor(session.handles)
    out = []
    for k in range(len(handles)):
        for _ in range(20):  # a direction that keeps the moved window inside the image
            a = rng.uniform(0, 2 * math.pi)
            dist = rng.uniform(2, 4) * (2 * r2 + 1)
            p = handles[k] + torch.tensor([math.cos(a), math.sin(a)]) * dist
            if 0 <= p[0] <= res - 1 and 0 <= p[1] <= res - 1:
                break
        else:
            continue
        _, best = track_points(field, session._templates[k : k + 1], p[None], r2, return_distance=True)
        out.append(float(match_ratio(best, session._spread[k : k + 1])[0]))
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    import bench_drag as bd

    from server.engine.checkpoint import load_generator
    from server.engine.drag import DragSession
    from server.engine.drag_options import DragOptions
    from server.engine.generator import to_uint8
    from server.engine.predict_options import PredictOptions
    from server.engine.predict_session import PredictSession
    from server.synthfaces.detector import load_detector

    G = load_generator(args.checkpoint)
    det = load_detector()
    model = None
    if "predict" in args.methods:
        from server.engine.predictor_io import load_predictor

        model = load_predictor(args.predictor, G=G)
    res = G.img_resolution
    scale = res / 64
    n = args.faces
    with torch.no_grad():
        ws = torch.cat([G.ws_from_seed(args.seed + i, truncation_psi=0.7) for i in range(2 * n)])
        imgs = np.concatenate([to_uint8(G.synthesis(ws[i : i + 64])[0]) for i in range(0, 2 * n, 64)])
    lms = det.detect(imgs)
    lm_a, lm_b, ws_a = lms[0::2], lms[1::2], ws[0::2]
    rng = np.random.default_rng(args.seed)
    records: dict[str, dict[str, list[float]]] = {}
    drags: dict[str, list[dict]] = {}
    t0 = time.perf_counter()
    for method in args.methods:
        rec = records.setdefault(method, {"tracked": [], "drifted": [], "between": [], "moved_off": []})
        for protocol in args.protocols:
            groups = list(bd.LONG_GROUPS) if protocol == "long" else ["5"]
            for g in groups:
                idx = bd.group_indices(g)
                moved = bd.long_moves(g, lm_a, res, args.seed) if protocol == "long" else lm_b[:, idx]
                handles = np.clip(lm_a[:, idx] - 0.5, 0, res - 1)
                targets = np.clip(moved - 0.5, 0, res - 1)
                for i in range(n):
                    w = ws_a[i : i + 1]
                    if method == "optimize":
                        opts = DragOptions(max_steps=args.max_steps, lost_ratio=None)
                        s = DragSession(G, w, handles[i], targets[i], options=opts)
                        r2, blocks = s.radii[1], s.feature_blocks
                    else:
                        opts = PredictOptions.recommended(model, max_steps=args.max_steps, lost_ratio=None)
                        s = PredictSession(G, w, handles[i], targets[i], options=opts, model=model)
                        r2, blocks = opts.radius(res), s.track_blocks
                    frames, tracked, matches = [], [], []
                    while not s.done:
                        r = s.step()
                        frames.append(r.frame)
                        tracked.append(r.handles)
                        matches.append(r.match)
                        if r.step in PROBE_STEPS and not s.done:
                            rec["moved_off"] += moved_off_match(G, s, blocks, r2, rng)
                    rec["moved_off"] += moved_off_match(G, s, blocks, r2, rng)
                    found = det.detect(np.stack(frames))[:, idx] - 0.5  # [T, k, 2] session pixels
                    err = np.linalg.norm(np.asarray(tracked) - found, axis=-1)  # [T, k]
                    m = np.asarray(matches)
                    for cls, sel in (
                        ("tracked", err <= args.good * scale),
                        ("drifted", err >= args.bad * scale),
                        ("between", (err > args.good * scale) & (err < args.bad * scale)),
                    ):
                        rec[cls] += m[sel].tolist()
                    drags.setdefault(method, []).append(
                        {
                            "protocol": protocol,
                            "group": g,
                            "face": i,
                            "steps": r.step,
                            "reason": r.reason,
                            "match": m.max(axis=1).round(4).tolist(),  # per step, the worst handle
                            "all_tracked": (err <= args.good * scale).all(axis=1).tolist(),
                            "any_drifted": (err >= args.bad * scale).any(axis=1).tolist(),
                        }
                    )
                print(
                    f"{method} {protocol} {g}: {n} drags, {time.perf_counter() - t0:.0f} s so far", flush=True
                )
    summary = summarise(records, drags)
    print_summary(summary)
    if args.json is not None:
        report = {
            "command": "scripts/calibrate_tracking.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "resolution": res,
            "checkpoint": args.checkpoint or "embedded",
            "faces": n,
            "seed": args.seed,
            "good_px": args.good * scale,
            "bad_px": args.bad * scale,
            "summary": summary,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def summarise(records: dict, drags: dict) -> dict:
    out: dict = {}
    for method, rec in records.items():
        q = {}
        for cls, vals in rec.items():
            a = np.asarray(vals, dtype=np.float64)
            q[cls] = {
                "n": int(a.size),
                **(
                    {f"p{p}": float(np.percentile(a, p)) for p in (1, 5, 10, 50, 90, 95, 99, 99.9)}
                    if a.size
                    else {}
                ),
            }
        rows = []
        ds = drags.get(method, [])
        for thr in THRESHOLDS:
            row = {"threshold": thr}
            for cls in ("tracked", "drifted", "between", "moved_off"):
                a = np.asarray(rec[cls])
                row[f"{cls}_above"] = float((a > thr).mean()) if a.size else math.nan
            # a drag false alarm: the rule would end it at a step where every handle was still tracked
            false_alarm, caught, with_drift = 0, 0, 0
            for d in ds:
                m = np.asarray(d["match"])
                first = np.flatnonzero(m > thr)
                drift = np.flatnonzero(d["any_drifted"])
                if len(first) and d["all_tracked"][first[0]]:
                    false_alarm += 1
                if len(drift):
                    with_drift += 1
                    caught += int(len(first) > 0 and first[0] <= drift[-1])
            row["drags_false_alarm"] = false_alarm / max(1, len(ds))
            row["drags_with_drift"] = with_drift
            row["drags_with_drift_caught"] = caught / max(1, with_drift)
            rows.append(row)
        out[method] = {"match": q, "thresholds": rows, "drags": len(ds)}
    return out


def print_summary(summary: dict) -> None:
    for method, s in summary.items():
        print(f"\n{method}: {s['drags']} drags; match = best-match distance / template spread")
        for cls, q in s["match"].items():
            if q["n"]:
                pct = " ".join(f"p{p} {q[f'p{p}']:.2f}" for p in (5, 50, 90, 99, 99.9))
                print(f"  {cls:<9} n={q['n']:<6} {pct}")
        print(
            f"  {'ratio':>5} {'tracked>':>9} {'drifted>':>9} {'moved>':>7} {'drag FA':>8} "
            f"{'drifts caught':>14}"
        )
        for r in s["thresholds"]:
            print(
                f"  {r['threshold']:5.2f} {100 * r['tracked_above']:8.2f}% {100 * r['drifted_above']:8.1f}% "
                f"{100 * r['moved_off_above']:6.1f}% {100 * r['drags_false_alarm']:7.1f}% "
                f"{100 * r['drags_with_drift_caught']:6.1f}% of {r['drags_with_drift']}"
            )


if __name__ == "__main__":
    raise SystemExit(main())
