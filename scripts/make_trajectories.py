#!/usr/bin/env python
"""Teacher drag trajectories for the Latent Predictor: DragGAN's optimiser on random edits.

Each trajectory is one DragGAN optimisation (``DragSession``, stepped in batches with
``step_batch``) on a random generated face with random handle/target pairs, recorded at every
step: the first ``n_rows`` W+ rows (as fp16 offsets from the start latent), the handles tracked
in that step's frame, the targets, the step. Edits are of two kinds:

  * landmark: landmarks of face A (detected with the SynthFaces detector on the generated image)
    dragged onto the same landmarks of another random face B: one landmark, the benchmark's five,
    a random 2-8, or all of them (the benchmark protocol, on seeds the benchmark does not use);
  * random: 1-5 handles inside the face (the detected landmarks' box, or the image centre
    without a detector), moved 1 px to a fifth of the image, in one shared direction or each
    its own.

Output: ``<out>/shard_NNNNN.safetensors`` (format below), written atomically. Shard i is fully
determined by (--seed, i), so an interrupted run resumes by skipping finished shards, and
``--workers N --worker I`` splits the shards among N processes (one per core):

    .venv/bin/python scripts/make_trajectories.py --out runs/trajectories --shards 48 --per-shard 64

Shard tensors (T trajectories, S recorded steps in all, K the shard's largest point count):
    w0 [T, num_ws, w_dim] f32       start latents (rows >= n_rows never change)
    dw [S, n_rows, w_dim] f16       w_t - w0 on the first n_rows rows
    handles [S, K, 2] f32           handles tracked in the frame of w_t (NaN padding)
    targets [T, K, 2] f32           targets (NaN padding)
    offsets [T + 1] i64             trajectory i is steps offsets[i]:offsets[i+1]
    n_points, seeds, kinds, reached [T]
Metadata: format "livedrag.trajectories", version, generator identity, drag options, n_rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from server.engine.drag import DragSession, step_batch  # noqa: E402
from server.engine.drag_options import DragOptions  # noqa: E402
from server.engine.generator import Generator, to_uint8  # noqa: E402
from server.engine.predictor_io import GeneratorIdentity  # noqa: E402
from server.engine.stop_rules import LOST_RATIO  # noqa: E402

FORMAT = "livedrag.trajectories"
FORMAT_VERSION = "1"
KIND_RANDOM, KIND_LANDMARK = 0, 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="generator .safetensors (default: embedded model)")
    p.add_argument("--out", type=Path, default=Path("runs/trajectories"), help="shard directory")
    p.add_argument("--shards", type=int, default=48, help="number of shards (default 48)")
    p.add_argument("--per-shard", type=int, default=64, help="trajectories per shard (default 64)")
    p.add_argument("--batch", type=int, default=16, help="drags stepped together (default 16)")
    p.add_argument("--seed", type=int, default=0, help="base seed; shard i uses (seed, i)")
    p.add_argument("--seed-base", type=int, default=1_000_000, help="image seeds are drawn above this")
    p.add_argument("--max-steps", type=int, default=200, help="DragGAN step budget per drag (default 200)")
    p.add_argument(
        "--lr",
        type=float,
        default=2e-3,
        help="teacher's Adam step size (default 2e-3, the optimiser mode's and the benchmark's; "
        "see docs/predictor.md, 'The teacher's step size')",
    )
    p.add_argument("--n-rows", type=int, default=6, help="W+ rows optimised and recorded (default 6)")
    p.add_argument(
        "--lost-ratio",
        type=lambda v: None if v == "none" else float(v),
        default=LOST_RATIO,
        help=f"a teacher drag ends when a handle is lost, match above this (default {LOST_RATIO}, the "
        "product's rule, server/engine/stop_rules.py; none: drags go on after losing a handle)",
    )
    p.add_argument("--trunc", type=float, nargs=2, default=(0.6, 0.8), help="truncation psi range")
    p.add_argument("--landmark-frac", type=float, default=0.5, help="share of landmark-to-landmark drags")
    p.add_argument(
        "--shift-frac",
        type=float,
        default=0.5,
        help="share of landmark drags whose targets are the landmarks moved by one 2-8 px shift "
        "(+-1 px jitter) instead of face B's (default 0.5)",
    )
    p.add_argument("--detector", default=None, help="landmark detector (default: the shipped one)")
    p.add_argument("--no-detector", action="store_true", help="random points only, no landmarks")
    p.add_argument("--workers", type=int, default=1, help="split the shards among this many processes")
    p.add_argument(
        "--worker", type=int, default=0, help="this process makes shards i with i %% workers == worker"
    )
    p.add_argument("--device", default=None, help="cpu, cuda (default: cuda if available)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--no-progress", action="store_true")
    return p


# -- shard files -----------------------------------------------------------------------------------


def shard_path(out: Path, i: int) -> Path:
    return out / f"shard_{i:05d}.safetensors"


def shard_identity(path: Path) -> dict | None:
    """The generator identity a finished shard was made with (None: not a readable shard)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # noqa: BLE001 - any unreadable file counts as unfinished
        return None
    if meta.get("format") != FORMAT:
        return None
    return json.loads(meta["generator"])


def write_shard(path: Path, trajs: list[dict], meta: dict) -> Path:
    k = max(t["targets"].shape[0] for t in trajs)
    n_rows, w_dim = trajs[0]["dw"].shape[1:]

    def pad(a: np.ndarray) -> np.ndarray:  # [..., k_i, 2] -> [..., k, 2] with NaN
        out = np.full(a.shape[:-2] + (k, 2), np.nan, np.float32)
        out[..., : a.shape[-2], :] = a
        return out

    lengths = [len(t["dw"]) for t in trajs]
    tensors = {
        "w0": torch.from_numpy(np.stack([t["w0"] for t in trajs]).astype(np.float32)),
        "dw": torch.from_numpy(np.concatenate([t["dw"] for t in trajs]).astype(np.float16)),
        "handles": torch.from_numpy(np.concatenate([pad(t["handles"]) for t in trajs])),
        "targets": torch.from_numpy(np.stack([pad(t["targets"]) for t in trajs])),
        "offsets": torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)),
        "n_points": torch.tensor([t["targets"].shape[0] for t in trajs], dtype=torch.int64),
        "seeds": torch.tensor([t["seed"] for t in trajs], dtype=torch.int64),
        "kinds": torch.tensor([t["kind"] for t in trajs], dtype=torch.int64),
        "reached": torch.tensor([t["reached"] for t in trajs], dtype=torch.int64),
    }
    meta = {"format": FORMAT, "version": FORMAT_VERSION, **{k: json.dumps(v) for k, v in meta.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def read_shards(paths: list[Path], identity: GeneratorIdentity | None = None) -> dict:
    """Concatenate shards into one dict of tensors (trajectory-level and step-level arrays).

    With ``identity`` set, every shard must have been made with that generator.
    """
    from safetensors.torch import load_file

    parts, metas = [], []
    for p in paths:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
        if meta.get("format") != FORMAT:
            raise ValueError(f"{p} is not a trajectory shard")
        gen = json.loads(meta["generator"])
        if identity is not None and (gen["config_hash"], gen["weights_hash"]) != (
            identity.config_hash,
            identity.weights_hash,
        ):
            raise ValueError(
                f"{p} was made with generator {gen} but training uses {identity.to_dict()}; "
                "make trajectories for this generator (another --out directory)"
            )
        parts.append(load_file(str(p)))
        metas.append(meta)
    if not parts:
        raise ValueError("no trajectory shards given")
    k = max(p["targets"].shape[1] for p in parts)

    def padk(t: torch.Tensor) -> torch.Tensor:
        if t.shape[1] == k:
            return t
        out = torch.full((t.shape[0], k, 2), float("nan"))
        out[:, : t.shape[1]] = t
        return out

    offsets, base = [], 0
    for p in parts:
        offsets.append(p["offsets"][:-1] + base)
        base += int(p["offsets"][-1])
    data = {
        "w0": torch.cat([p["w0"] for p in parts]),
        "dw": torch.cat([p["dw"] for p in parts]),
        "handles": torch.cat([padk(p["handles"]) for p in parts]),
        "targets": torch.cat([padk(p["targets"]) for p in parts]),
        "offsets": torch.cat(offsets + [torch.tensor([base])]),
    }
    for key in ("n_points", "seeds", "kinds", "reached"):
        data[key] = torch.cat([p[key] for p in parts])
    data["meta"] = {k: json.loads(v) for k, v in metas[0].items() if k not in ("format", "version")}
    return data


# -- random edits ----------------------------------------------------------------------------------


def face_box(lm: np.ndarray | None, res: int) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) in session pixels: the landmarks' box grown by 15%, or the central 60%."""
    if lm is None:
        return 0.2 * (res - 1), 0.2 * (res - 1), 0.8 * (res - 1), 0.8 * (res - 1)
    x0, y0 = lm.min(0)
    x1, y1 = lm.max(0)
    gx, gy = 0.15 * (x1 - x0), 0.15 * (y1 - y0)
    lo, hi = 1.0, res - 2.0
    return (
        float(np.clip(x0 - gx, lo, hi)),
        float(np.clip(y0 - gy, lo, hi)),
        float(np.clip(x1 + gx, lo, hi)),
        float(np.clip(y1 + gy, lo, hi)),
    )


def landmark_subset(rng: np.random.Generator, groups: dict[str, list[int]], n_landmarks: int) -> list[int]:
    u = rng.random()
    if u < 0.25:
        return [int(rng.integers(n_landmarks))]
    if u < 0.5:
        return list(groups["five"])
    if u < 0.85:
        return sorted(rng.choice(n_landmarks, size=int(rng.integers(2, 9)), replace=False).tolist())
    return list(range(n_landmarks))


def random_edit(rng: np.random.Generator, box, res: int) -> tuple[np.ndarray, np.ndarray]:
    """1-5 handles in ``box``, each moved 1 px .. res/5 px (one shared direction half the time)."""
    n = int(rng.choice([1, 1, 2, 2, 3, 4, 5]))
    x0, y0, x1, y1 = box
    h = np.stack([rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)], 1)
    length = rng.uniform(1.0, res / 5, n if rng.random() < 0.5 else 1)
    angle = rng.uniform(0, 2 * np.pi, n if rng.random() < 0.5 else 1)
    angle = angle + rng.normal(0, 0.2, n)  # a little jitter on a shared direction
    v = np.stack([np.cos(angle), np.sin(angle)], 1) * np.broadcast_to(length, (n,))[:, None]
    t = np.clip(h + v, 0, res - 1)
    return h.astype(np.float32), t.astype(np.float32)


# -- one shard -------------------------------------------------------------------------------------


def make_shard(
    G: Generator,
    shard: int,
    args: argparse.Namespace,
    detector,
    bar=None,
) -> list[dict]:
    """All trajectories of one shard (deterministic in (args.seed, shard))."""
    from server.synthfaces import LANDMARK_GROUPS, NUM_LANDMARKS

    rng = np.random.default_rng([args.seed, shard])
    res = G.img_resolution
    n_rows = min(args.n_rows, G.num_ws)
    dev = G.mapping.w_avg.device
    opts = DragOptions(lr=args.lr, max_steps=args.max_steps, n_opt_rows=n_rows, lost_ratio=args.lost_ratio)
    out: list[dict] = []
    for b0 in range(0, args.per_shard, args.batch):
        nb = min(args.batch, args.per_shard - b0)
        seeds = rng.integers(args.seed_base, args.seed_base + 10**8, size=2 * nb)
        psi = rng.uniform(args.trunc[0], args.trunc[1], size=2 * nb)
        with torch.no_grad():
            ws = torch.cat(
                [G.ws_from_seed(int(s), truncation_psi=float(p)) for s, p in zip(seeds, psi, strict=True)]
            )
            lms = None
            if detector is not None:
                img, _ = G.synthesis(ws.to(dev))
                lms = detector.detect(to_uint8(img)) - 0.5  # detector pixels -> session pixels
        ws = ws.cpu()
        sessions, specs = [], []
        for j in range(nb):
            lm_a = None if lms is None else np.clip(lms[j], 0, res - 1)
            if lms is not None and rng.random() < args.landmark_frac:
                idx = landmark_subset(rng, LANDMARK_GROUPS, NUM_LANDMARKS)
                h = lm_a[idx]
                if rng.random() < args.shift_frac:  # the benchmark's shift protocol: one move + jitter
                    angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(2, 8) * res / 64
                    shift = np.array([np.cos(angle), np.sin(angle)]) * length
                    t = np.clip(h + shift + rng.uniform(-1, 1, h.shape), 0, res - 1).astype(np.float32)
                else:  # onto the same landmarks of face B
                    t = np.clip(lms[nb + j][idx], 0, res - 1)
                kind = KIND_LANDMARK
            else:
                h, t = random_edit(rng, face_box(lm_a, res), res)
                kind = KIND_RANDOM
            sessions.append(DragSession(G, ws[j : j + 1].to(dev), h, t, options=opts))
            specs.append({"seed": int(seeds[j]), "kind": kind, "w0": ws[j].cpu().numpy(), "targets": t})
        rec_w = [[] for _ in range(nb)]
        rec_h = [[] for _ in range(nb)]
        while True:
            active = [j for j in range(nb) if not sessions[j].done]
            if not active:
                break
            lat = [sessions[j].latent() for j in active]
            results = step_batch([sessions[j] for j in active])
            for j, w, r in zip(active, lat, results, strict=True):
                rec_w[j].append((w[0, :n_rows] - ws[j, :n_rows]).numpy())
                rec_h[j].append(np.asarray(r.handles, np.float32))
            if bar is not None:
                bar.set_postfix(steps=len(rec_w[active[0]]), active=len(active))
        for j in range(nb):
            specs[j].update(
                dw=np.stack(rec_w[j]).astype(np.float16),
                handles=np.stack(rec_h[j]),
                reached=int(sessions[j].reason == "reached"),
            )
            out.append(specs[j])
        if bar is not None:
            bar.update(nb)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    from server.cli.common import pick_device, progress
    from server.engine.checkpoint import load_generator

    device = pick_device(args.device)
    G = load_generator(args.checkpoint, device=device)
    identity = GeneratorIdentity.of(G)
    detector = None
    if not args.no_detector:
        from server.synthfaces.detector import load_detector

        try:
            detector = load_detector(args.detector, device=device)
        except FileNotFoundError as e:
            print(f"warning: {e}; using random points in the image centre only", file=sys.stderr)
    if not 0 <= args.worker < args.workers:
        raise SystemExit(f"--worker must be in [0, --workers), got {args.worker} of {args.workers}")
    todo = []
    for i in range(args.worker, args.shards, args.workers):
        got = shard_identity(shard_path(args.out, i))
        if got is None:
            todo.append(i)
        elif (got["config_hash"], got["weights_hash"]) != (identity.config_hash, identity.weights_hash):
            raise SystemExit(
                f"{shard_path(args.out, i)} was made with another generator ({got}); use another --out"
            )
    mine = len(range(args.worker, args.shards, args.workers))
    print(f"{mine - len(todo)} of this worker's {mine} shards done; making {len(todo)} in {args.out}")
    meta = {
        "generator": identity.to_dict(),
        "options": DragOptions(
            lr=args.lr, max_steps=args.max_steps, n_opt_rows=args.n_rows, lost_ratio=args.lost_ratio
        ).to_dict(),
        "n_rows": min(args.n_rows, G.num_ws),
        "resolution": G.img_resolution,
        "detector": detector is not None,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    bar = progress(
        total=len(todo) * args.per_shard, desc="trajectories", disable=True if args.no_progress else None
    )
    t0 = time.perf_counter()
    for i in todo:
        trajs = make_shard(G, i, args, detector, bar)
        write_shard(shard_path(args.out, i), trajs, {**meta, "shard": i})
    bar.close()
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
