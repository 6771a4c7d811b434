"""Teacher drag trajectories for the Latent Predictor: DragGAN's optimiser on random edits.

Each trajectory is one DragGAN optimisation (``DragSession``, stepped in batches with
``step_batch``) on a random generated image with random handle/target pairs, recorded at every
step: the first ``n_rows`` W+ rows (as fp16 offsets from the start latent), the handles tracked
in that step's frame, the targets, the step. Edits are of five kinds (``TrajectoryConfig`` sets
their shares):

  * landmark (SynthFaces only, needs its detector): landmarks of face A dragged onto the same
    landmarks of another face B, or moved by one 2-8 px shift (the benchmark's protocols, on seeds
    the benchmark does not use); a ``landmark_long_frac`` share of them are the benchmark's long
    group drags instead (server/synthfaces/long_drags.py: a smile, the chin down, the nose
    sideways, the brows up, the whole head, by 8-25% of the image; kind ``landmark_long``);
  * random: 1-5 handles in the central 60% of the image (the detected landmarks' box with a
    detector), moved 1 px to a fifth of the image, in one shared direction or each its own;
  * contrast (landmark-free, any generator): 1-5 handles where the image has edges (sampled by
    the Sobel magnitude of the generated image, ``contrast_points``), moved like random ones or, a
    ``shift_frac`` share, by one 2-8 px shift (at 64 px, scaled with the resolution) with up to 1 px
    of jitter each: bench_drag's ``shift`` protocol without landmarks;
  * long (landmark-free): a group of 1-6 high-contrast points near each other moved together by
    8-25% of the image size: bench_drag's ``long`` protocol without landmarks.

Shard i is fully determined by (seed, i), so an interrupted run resumes by skipping finished
shards (``pending_shards``). Shard tensors (T trajectories, S recorded steps in all, K the
shard's largest point count)::

    w0 [T, num_ws, w_dim] f32       start latents (rows >= n_rows never change)
    dw [S, n_rows, w_dim] f16       w_t - w0 on the first n_rows rows
    handles [S, K, 2] f32           handles tracked in the frame of w_t (NaN padding)
    targets [T, K, 2] f32           targets (NaN padding)
    offsets [T + 1] i64             trajectory i is steps offsets[i]:offsets[i+1]
    n_points, seeds, kinds, reached [T]

Metadata: format "livedrag.trajectories", version, generator identity, drag options, n_rows.
``scripts/make_trajectories.py`` is the command line of this module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from server.engine.drag import DragSession, step_batch
from server.engine.drag_options import DragOptions
from server.engine.generator import Generator, to_uint8
from server.engine.predictor_io import GeneratorIdentity
from server.engine.stop_rules import LOST_RATIO
from server.synthfaces.long_drags import LONG_LENGTH  # bench_drag's long protocol: move length / size

FORMAT = "livedrag.trajectories"
FORMAT_VERSION = "1"
KIND_RANDOM, KIND_LANDMARK, KIND_CONTRAST, KIND_LONG, KIND_LANDMARK_LONG = 0, 1, 2, 3, 4
KIND_NAMES = {
    KIND_RANDOM: "random",
    KIND_LANDMARK: "landmark",
    KIND_CONTRAST: "contrast",
    KIND_LONG: "long",
    KIND_LANDMARK_LONG: "landmark_long",
}
SHIFT_PX = (2.0, 8.0)  # bench_drag's shift protocol: move length at 64 px (scaled with res)


@dataclass(frozen=True)
class TrajectoryConfig:
    """What to record and how many; shard i depends only on (seed, i) and these fields."""

    shards: int = 48  # number of shards
    per_shard: int = 64  # trajectories per shard
    batch: int = 16  # drags stepped together
    seed: int = 0  # base seed; shard i draws from (seed, i)
    seed_base: int = 1_000_000  # image seeds are drawn above this (benchmarks use seeds below)
    max_steps: int = 200  # DragGAN step budget per drag
    lr: float = 2e-3  # teacher's Adam step size (the optimiser mode's and the benchmark's)
    n_rows: int = 6  # W+ rows optimised and recorded
    lost_ratio: float | None = LOST_RATIO  # a drag ends when a handle is lost (None: off)
    trunc: tuple[float, float] = (0.6, 0.8)  # truncation psi range of the start images
    landmark_frac: float = 0.5  # share of landmark drags (only with a detector)
    landmark_long_frac: float = 0.0  # share of the landmark drags that are bench_drag's long groups
    shift_frac: float = 0.5  # share of landmark and contrast drags moved by one 2-8 px shift
    contrast_frac: float = 0.0  # share of the non-landmark drags on high-contrast points
    long_frac: float = 0.0  # share of the non-landmark drags that are long group drags
    dtype: str = "float32"  # teacher's synthesis dtype (float16/bfloat16 on a GPU)

    def __post_init__(self) -> None:
        object.__setattr__(self, "trunc", tuple(float(t) for t in self.trunc))
        if self.contrast_frac < 0 or self.long_frac < 0 or self.contrast_frac + self.long_frac > 1:
            raise ValueError("contrast_frac and long_frac must be >= 0 and sum to at most 1")
        if not 0 <= self.landmark_long_frac <= 1:
            raise ValueError("landmark_long_frac must be in [0, 1]")
        if min(self.shards, self.per_shard, self.batch, self.max_steps) < 1:
            raise ValueError("shards, per_shard, batch and max_steps must be >= 1")

    def drag_options(self, num_ws: int | None = None) -> DragOptions:
        rows = self.n_rows if num_ws is None else min(self.n_rows, num_ws)
        return DragOptions(
            lr=self.lr,
            max_steps=self.max_steps,
            n_opt_rows=rows,
            lost_ratio=self.lost_ratio,
            dtype=self.dtype,
        )

    def to_dict(self) -> dict:
        return asdict(self)


# -- shard files -----------------------------------------------------------------------------------


def shard_path(out: Path, i: int) -> Path:
    return Path(out) / f"shard_{i:05d}.safetensors"


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


def pending_shards(out: Path, shards: range | list[int], identity: GeneratorIdentity) -> list[int]:
    """The shards of ``shards`` not finished in ``out``; ValueError if one was made with another
    generator."""
    todo = []
    for i in shards:
        got = shard_identity(shard_path(out, i))
        if got is None:
            todo.append(i)
        elif (got["config_hash"], got["weights_hash"]) != (identity.config_hash, identity.weights_hash):
            raise ValueError(
                f"{shard_path(out, i)} was made with another generator ({got}); use another --out"
            )
    return todo


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


def random_moves(rng: np.random.Generator, h: np.ndarray, res: int) -> np.ndarray:
    """Targets for handles ``h`` [n, 2]: each moved 1 px .. res/5 px, one shared direction (with a
    little jitter) half the time, each its own otherwise."""
    n = len(h)
    length = rng.uniform(1.0, res / 5, n if rng.random() < 0.5 else 1)
    angle = rng.uniform(0, 2 * np.pi, n if rng.random() < 0.5 else 1)
    angle = angle + rng.normal(0, 0.2, n)  # a little jitter on a shared direction
    v = np.stack([np.cos(angle), np.sin(angle)], 1) * np.broadcast_to(length, (n,))[:, None]
    return np.clip(h + v, 0, res - 1).astype(np.float32)


def random_edit(rng: np.random.Generator, box, res: int) -> tuple[np.ndarray, np.ndarray]:
    """1-5 handles in ``box``, each moved 1 px .. res/5 px (one shared direction half the time)."""
    n = int(rng.choice([1, 1, 2, 2, 3, 4, 5]))
    x0, y0, x1, y1 = box
    h = np.stack([rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)], 1)
    return h.astype(np.float32), random_moves(rng, h, res)


def shift_moves(rng: np.random.Generator, h: np.ndarray, res: int) -> np.ndarray:
    """bench_drag's shift protocol: ``h`` [n, 2] moved by one 2-8 px vector (at 64 px, scaled with
    ``res``) plus up to 1 px of jitter per point."""
    angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(*SHIFT_PX) * res / 64
    shift = np.array([np.cos(angle), np.sin(angle)]) * length
    return np.clip(h + shift + rng.uniform(-1, 1, h.shape), 0, res - 1).astype(np.float32)


def long_moves(rng: np.random.Generator, h: np.ndarray, res: int) -> np.ndarray:
    """bench_drag's long protocol without landmarks: ``h`` [n, 2] moved together by 8-25% of the
    image size in one random direction (up to res/64 px of jitter per point)."""
    a, length = rng.uniform(0, 2 * np.pi), rng.uniform(*LONG_LENGTH) * res
    v = np.array([np.cos(a), np.sin(a)]) * length
    return np.clip(h + v + rng.uniform(-1, 1, h.shape) * res / 64, 0, res - 1).astype(np.float32)


# -- high-contrast points --------------------------------------------------------------------------


def sobel_magnitude(img: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] (or [H, W]) -> float32 [H, W]: the Sobel gradient magnitude of the grey image."""
    g = img.astype(np.float32)
    if g.ndim == 3:
        g = g.mean(-1)
    p = np.pad(g, 1, mode="edge")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    return np.hypot(gx, gy)


def contrast_points(
    img: np.ndarray,
    n: int,
    rng: np.random.Generator,
    top: float = 0.2,
    margin: float = 0.05,
    near: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """``n`` points (x, y) [n, 2] float32 where ``img`` (uint8 [H, W, 3]) has strong edges.

    Candidates are the pixels in the ``top`` share of Sobel magnitude, at least ``margin`` of the
    image size from the border (and within ``near`` = (x, y, radius) when given); points are drawn
    with probability proportional to the magnitude, without replacement (Gumbel top-k), at least
    res/32 px apart where the candidates allow. A flat image falls back to uniform points.
    """
    hgt, wid = img.shape[:2]
    mag = sobel_magnitude(img)
    m = int(round(margin * min(hgt, wid)))
    ok = np.zeros_like(mag, dtype=bool)
    ok[m : hgt - m, m : wid - m] = True
    if near is not None:
        ys, xs = np.mgrid[:hgt, :wid]
        ok &= (xs - near[0]) ** 2 + (ys - near[1]) ** 2 <= near[2] ** 2
    if not ok.any():
        ok[m : hgt - m, m : wid - m] = True
    vals = mag[ok]
    thresh = np.quantile(vals, 1 - top) if vals.size else 0.0
    cand = ok & (mag >= thresh) & (mag > 0)
    if not cand.any():  # a flat image: uniform over the allowed pixels
        cand = ok
    ys, xs = np.nonzero(cand)
    w = mag[ys, xs].astype(np.float64) + 1e-6
    keys = np.log(w) + rng.gumbel(size=len(w))
    order = np.argsort(-keys)
    min_d2 = (max(hgt, wid) / 32) ** 2
    chosen: list[int] = []
    for i in order:
        if all((xs[i] - xs[j]) ** 2 + (ys[i] - ys[j]) ** 2 >= min_d2 for j in chosen):
            chosen.append(int(i))
            if len(chosen) == n:
                break
    while len(chosen) < n:  # too few spaced candidates: allow repeats of the best ones
        chosen.append(int(order[len(chosen) % len(order)]))
    return np.stack([xs[chosen], ys[chosen]], 1).astype(np.float32)


def contrast_edit(
    rng: np.random.Generator, img: np.ndarray, shift_frac: float
) -> tuple[np.ndarray, np.ndarray]:
    """1-5 high-contrast handles moved by one 2-8 px shift (``shift_frac`` of the time) or like
    random handles (1 px .. res/5)."""
    res = img.shape[1]
    n = int(rng.choice([1, 1, 2, 2, 3, 4, 5]))
    h = contrast_points(img, n, rng)
    t = shift_moves(rng, h, res) if rng.random() < shift_frac else random_moves(rng, h, res)
    return h, t


def group_points(img: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` high-contrast points [n, 2] near each other: an anchor, then points within res/6 of it."""
    res = img.shape[1]
    anchor = contrast_points(img, 1, rng)[0]
    return anchor[None] if n == 1 else contrast_points(img, n, rng, near=(anchor[0], anchor[1], res / 6))


def long_edit(rng: np.random.Generator, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A group of 1-6 high-contrast points within res/6 of the first, moved 8-25% of the image."""
    n = int(rng.choice([1, 1, 2, 3, 4, 6]))
    h = group_points(img, n, rng)
    return h, long_moves(rng, h, img.shape[1])


# -- one shard -------------------------------------------------------------------------------------


def make_shard(G: Generator, shard: int, cfg: TrajectoryConfig, detector=None, bar=None) -> list[dict]:
    """All trajectories of one shard (deterministic in (cfg.seed, shard))."""
    rng = np.random.default_rng([cfg.seed, shard])
    res = G.img_resolution
    n_rows = min(cfg.n_rows, G.num_ws)
    dev = G.mapping.w_avg.device
    opts = cfg.drag_options(G.num_ws)
    new_kinds = cfg.contrast_frac + cfg.long_frac > 0  # draws nothing more when off (old shards)
    out: list[dict] = []
    for b0 in range(0, cfg.per_shard, cfg.batch):
        nb = min(cfg.batch, cfg.per_shard - b0)
        seeds = rng.integers(cfg.seed_base, cfg.seed_base + 10**8, size=2 * nb)
        psi = rng.uniform(cfg.trunc[0], cfg.trunc[1], size=2 * nb)
        with torch.no_grad():
            ws = torch.cat(
                [G.ws_from_seed(int(s), truncation_psi=float(p)) for s, p in zip(seeds, psi, strict=True)]
            )
            lms, imgs = None, None
            if detector is not None:
                img, _ = G.synthesis(ws.to(dev))
                lms = detector.detect(to_uint8(img)) - 0.5  # detector pixels -> session pixels
            if new_kinds:
                imgs = to_uint8(G.synthesis(ws[:nb].to(dev), noise_mode="const")[0])
        ws = ws.cpu()
        sessions, specs = [], []
        for j in range(nb):
            lm_a = None if lms is None else np.clip(lms[j], 0, res - 1)
            if lms is not None and rng.random() < cfg.landmark_frac:
                if cfg.landmark_long_frac > 0 and rng.random() < cfg.landmark_long_frac:
                    h, t = _landmark_long_edit(rng, lm_a, res)
                    kind = KIND_LANDMARK_LONG
                else:
                    h, t = _landmark_edit(rng, lm_a, lms[nb + j], cfg.shift_frac, res)
                    kind = KIND_LANDMARK
            elif (u := rng.random() if new_kinds else 1.0) < cfg.long_frac:
                h, t = long_edit(rng, imgs[j])
                kind = KIND_LONG
            elif u < cfg.long_frac + cfg.contrast_frac:
                h, t = contrast_edit(rng, imgs[j], cfg.shift_frac)
                kind = KIND_CONTRAST
            else:
                h, t = random_edit(rng, face_box(lm_a, res), res)
                kind = KIND_RANDOM
            sessions.append(DragSession(G, ws[j : j + 1].to(dev), h, t, options=opts))
            specs.append({"seed": int(seeds[j]), "kind": kind, "w0": ws[j].cpu().numpy(), "targets": t})
        for spec, rec in zip(specs, record_drags(sessions, n_rows, bar), strict=True):
            spec.update(rec)
            out.append(spec)
        if bar is not None:
            bar.update(nb)
    return out


def record_drags(sessions: list[DragSession], n_rows: int, bar=None) -> list[dict]:
    """Step the drags together to their ends and record each as a teacher trajectory: per step the
    first ``n_rows`` rows of the latent before it, relative to the drag's start latent (``dw``,
    float16), and the handles tracked in that latent's image; and whether it ``reached``."""
    starts = [s.latent()[0, :n_rows] for s in sessions]
    rec_w: list[list[np.ndarray]] = [[] for _ in sessions]
    rec_h: list[list[np.ndarray]] = [[] for _ in sessions]
    while True:
        active = [j for j, s in enumerate(sessions) if not s.done]
        if not active:
            break
        lat = [sessions[j].latent() for j in active]
        results = step_batch([sessions[j] for j in active])
        for j, w, r in zip(active, lat, results, strict=True):
            rec_w[j].append((w[0, :n_rows] - starts[j]).numpy())
            rec_h[j].append(np.asarray(r.handles, np.float32))
        if bar is not None:
            bar.set_postfix(steps=len(rec_w[active[0]]), active=len(active))
    return [
        {
            "dw": np.stack(w).astype(np.float16),
            "handles": np.stack(h),
            "reached": int(s.reason == "reached"),
        }
        for s, w, h in zip(sessions, rec_w, rec_h, strict=True)
    ]


def _landmark_edit(
    rng: np.random.Generator, lm_a: np.ndarray, lm_b: np.ndarray, shift_frac: float, res: int
) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks of face A onto face B's, or moved by one shift (the benchmark's protocols)."""
    from server.synthfaces import LANDMARK_GROUPS, NUM_LANDMARKS

    idx = landmark_subset(rng, LANDMARK_GROUPS, NUM_LANDMARKS)
    h = lm_a[idx]
    if rng.random() < shift_frac:  # the benchmark's shift protocol: one move + jitter
        angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(2, 8) * res / 64
        shift = np.array([np.cos(angle), np.sin(angle)]) * length
        return h, np.clip(h + shift + rng.uniform(-1, 1, h.shape), 0, res - 1).astype(np.float32)
    return h, np.clip(lm_b[idx], 0, res - 1)


def _landmark_long_edit(
    rng: np.random.Generator, lm_a: np.ndarray, res: int
) -> tuple[np.ndarray, np.ndarray]:
    """One of bench_drag's long groups (a smile, the chin down, the nose sideways, the brows up,
    the whole head) moved by 8-25% of the image, targets clipped to it."""
    from server.synthfaces.long_drags import LONG_GROUPS, group_indices, group_moves

    group = str(rng.choice(list(LONG_GROUPS)))
    h = lm_a[group_indices(group)].astype(np.float32)
    t = group_moves(group, lm_a[None], res, rng)[0]
    return h, np.clip(t, 0, res - 1).astype(np.float32)


def make_trajectories(
    G: Generator,
    out: Path,
    cfg: TrajectoryConfig,
    detector=None,
    shards: list[int] | None = None,
    meta: dict[str, Any] | None = None,
    bar_factory: Callable[[int], Any] | None = None,
) -> dict:
    """Make the unfinished shards of ``shards`` (default: all of ``cfg.shards``) in ``out``.

    Returns what ran: shards made, drags, recorded teacher steps, seconds and steps/s.
    ``bar_factory(total_drags)`` makes a progress bar (tqdm-like: update, set_postfix, close).
    """
    identity = GeneratorIdentity.of(G)
    todo = pending_shards(out, range(cfg.shards) if shards is None else shards, identity)
    info = {
        "generator": identity.to_dict(),
        "options": cfg.drag_options().to_dict(),
        "n_rows": min(cfg.n_rows, G.num_ws),
        "resolution": G.img_resolution,
        "detector": detector is not None,
        "config": cfg.to_dict(),
        **(meta or {}),
    }
    bar = bar_factory(len(todo) * cfg.per_shard) if bar_factory is not None else None
    t0 = time.perf_counter()
    steps = drags = 0
    for i in todo:
        trajs = make_shard(G, i, cfg, detector, bar)
        write_shard(shard_path(out, i), trajs, {**info, "shard": i})
        steps += sum(len(t["dw"]) for t in trajs)
        drags += len(trajs)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    return {
        "shards_made": len(todo),
        "drags": drags,
        "steps": steps,
        "seconds": seconds,
        "steps_per_s": steps / seconds if seconds > 0 and steps else None,
    }
