"""Landmark-free evaluation of a trained predictor and encoder, for any generator.

``scripts/bench_drag.py`` measures drags with the SynthFaces landmark detector, which only knows
faces. For any generator this module runs its ``shift`` and ``long`` protocols without landmarks:
the handles are high-contrast points of the generated image (``trajectories.contrast_points``,
``group_points``), moved by one 2-8 px vector (at 64 px, scaled with the resolution, with up to 1 px
of jitter each: ``shift``) or together by 8-25% of the image (``long``). Each edit runs alone to the
product's stop rules with the optimiser (DragGAN) and with the predictor. Per row it reports:

* ``md_tracked``: mean distance (px) of the method's own tracked handles to the targets;
* ``md_redetected``: the same after finding each handle again independently of the method's
  tracking: the nearest neighbour (L1, DragGAN's feature block) of the handle's start feature in
  the final image, searched in a disk that holds both the start point and the target (so an edit
  that did nothing finds it at its start, ``md_no_edit`` away). This replaces the landmark
  detector; it is the optimiser's own kind of tracking, so read it as a check, not ground truth;
* ``outside_change``: mean absolute pixel change (0-255) farther than res/8 from every handle and
  target: how much of the rest of the image the edit changed;
* reached share, end reasons, median steps, median CPU seconds per edit.

The encoder is scored by its PSNR on held-out generated images (bench_invert's ``generated`` set:
seeds from 10**7 on, truncation 0.7; the encoder trains on random z).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from server.engine.drag import DragSession
from server.engine.drag_options import DragOptions
from server.engine.generator import Generator, to_uint8
from server.engine.predict_options import PredictOptions
from server.engine.predict_session import PredictSession
from server.engine.predictor_io import PredictorBundle
from server.engine.tracking import resize_features

from .trajectories import contrast_points, group_points, long_moves, shift_moves

PROTOCOLS = ("shift", "long")
ENCODER_SEED = 10**7  # bench_invert's generated images


@dataclass(frozen=True)
class EvalConfig:
    """How many edits and images the evaluation measures."""

    edits: int = 20  # edits per row (protocol x point count x method)
    seed: int = 0  # image i of a row is seed + i (the trajectories use seeds above 1 000 000)
    trunc: float = 0.7  # truncation psi of the images (bench_drag's)
    max_steps: int = 200  # both methods' step cap (bench_drag's)
    lr: float = 2e-3  # optimiser's Adam step size (bench_drag's)
    shift_points: tuple[int, ...] = (1, 5)  # point counts of protocol shift (bench_drag's 1 and 5)
    long_points: tuple[int, ...] = (1, 4)  # group sizes of protocol long
    methods: tuple[str, ...] = ("optimize", "predict")
    encoder_images: int = 16  # held-out generated images for the encoder PSNR

    def to_dict(self) -> dict:
        return asdict(self)


def edit_set(G: Generator, protocol: str, n_points: int, cfg: EvalConfig) -> tuple[torch.Tensor, list, list]:
    """The edits of one row: start latents [edits, num_ws, w_dim], handles and targets per edit
    (float32 [n_points, 2] each). Deterministic in (seed, protocol, n_points)."""
    res = G.img_resolution
    rng = np.random.default_rng([cfg.seed, PROTOCOLS.index(protocol), n_points])
    with torch.no_grad():
        ws = torch.cat([G.ws_from_seed(cfg.seed + i, truncation_psi=cfg.trunc) for i in range(cfg.edits)])
        dev = G.mapping.w_avg.device
        imgs = np.concatenate(
            [to_uint8(G.synthesis(ws[i : i + 32].to(dev))[0]) for i in range(0, cfg.edits, 32)]
        )
    handles, targets = [], []
    for img in imgs:
        if protocol == "shift":
            h = contrast_points(img, n_points, rng)
            t = shift_moves(rng, h, res)
        else:
            h = group_points(img, n_points, rng)
            t = long_moves(rng, h, res)
        handles.append(h)
        targets.append(t)
    return ws.cpu(), handles, targets


@torch.no_grad()
def features(G: Generator, ws: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
    """DragGAN's feature map at image size [N, C, H, W] and the images uint8 [N, H, W, 3]."""
    block = G.default_feature_block()
    dev = G.mapping.w_avg.device
    img, feats = G.synthesis(ws.to(dev), feature_blocks=(block,))
    size = (G.img_resolution, G.img_resolution)
    return resize_features([feats[block]], size).cpu(), to_uint8(img)


def redetect(f0: torch.Tensor, f1: torch.Tensor, handles: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each handle found again in ``f1`` [C, H, W]: the pixel nearest (L1) to the start feature
    ``f0`` at the handle, within a disk around the midpoint of handle and target that holds both
    (radius half their distance + H/16). -> [K, 2] (x, y)."""
    _, hgt, wid = f1.shape
    ys, xs = torch.meshgrid(torch.arange(hgt), torch.arange(wid), indexing="ij")
    out = []
    for h, t in zip(handles, targets, strict=True):
        hx, hy = int(np.clip(round(float(h[0])), 0, wid - 1)), int(np.clip(round(float(h[1])), 0, hgt - 1))
        c = (h + t) / 2
        r = float(np.linalg.norm(t - h)) / 2 + hgt / 16
        inside = (xs - float(c[0])) ** 2 + (ys - float(c[1])) ** 2 <= r * r
        d = (f1 - f0[:, hy, hx, None, None]).abs().sum(0)  # [H, W]
        d = torch.where(inside, d, torch.full_like(d, float("inf")))
        k = int(torch.argmin(d))
        out.append((k % wid, k // wid))
    return np.asarray(out, np.float32)


def outside_change(img0: np.ndarray, img1: np.ndarray, points: np.ndarray) -> float:
    """Mean |img1 - img0| (0-255) over the pixels farther than res/8 from every point [K, 2]."""
    hgt, wid = img0.shape[:2]
    ys, xs = np.mgrid[:hgt, :wid]
    far = np.ones((hgt, wid), bool)
    for x, y in points:
        far &= (xs - x) ** 2 + (ys - y) ** 2 > (wid / 8) ** 2
    if not far.any():
        return 0.0
    diff = np.abs(img1.astype(np.float32) - img0.astype(np.float32)).mean(-1)
    return float(diff[far].mean())


def run_edit(
    method: str,
    G: Generator,
    w: torch.Tensor,
    handles: np.ndarray,
    targets: np.ndarray,
    model: PredictorBundle | None,
    cfg: EvalConfig,
) -> dict:
    """One edit alone, to the product's stop rules: final latent, tracked handles, steps, reason,
    wall and CPU seconds."""
    c0, t0 = time.process_time(), time.perf_counter()
    if method == "optimize":
        s: Any = DragSession(G, w, handles, targets, options=DragOptions(lr=cfg.lr, max_steps=cfg.max_steps))
    else:
        opts = PredictOptions.recommended(model, max_steps=cfg.max_steps)
        s = PredictSession(G, w, handles, targets, options=opts, model=model)
    r = None
    while not s.done:
        r = s.step()
    return {
        "latent": s.latent(),
        "handles": np.asarray(r.handles, np.float32),
        "steps": r.step,
        "reason": str(r.reason),
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
    }


def evaluate_drags(
    G: Generator,
    model: PredictorBundle | None,
    cfg: EvalConfig,
    bar_factory: Callable[[int], Any] | None = None,
) -> dict:
    """Rows per (protocol, point count, method) and, where both methods ran, the predictor
    against the optimiser (CPU speed-up, MD and outside-change ratios)."""
    methods = [m for m in cfg.methods if m != "predict" or model is not None]
    sets = [("shift", k) for k in cfg.shift_points] + [("long", k) for k in cfg.long_points]
    bar = bar_factory(len(sets) * len(methods) * cfg.edits) if bar_factory else None
    rows = []
    for protocol, k in sets:
        ws, handles, targets = edit_set(G, protocol, k, cfg)
        f0, img0 = features(G, ws)
        md_none = [float(np.linalg.norm(h - t, axis=1).mean()) for h, t in zip(handles, targets, strict=True)]
        for method in methods:
            res = []
            for i in range(cfg.edits):
                res.append(run_edit(method, G, ws[i : i + 1], handles[i], targets[i], model, cfg))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(protocol=protocol, points=k, method=method)
            f1, img1 = features(G, torch.cat([r["latent"] for r in res]))
            found = [redetect(f0[i], f1[i], handles[i], targets[i]) for i in range(cfg.edits)]
            reasons = [r["reason"] for r in res]
            rows.append(
                {
                    "protocol": protocol,
                    "points": k,
                    "method": method,
                    "edits": cfg.edits,
                    "md_no_edit": float(np.mean(md_none)),
                    "md_tracked": _mean_dist([r["handles"] for r in res], targets),
                    "md_redetected": _mean_dist(found, targets),
                    "outside_change": float(
                        np.mean(
                            [
                                outside_change(img0[i], img1[i], np.concatenate([handles[i], targets[i]]))
                                for i in range(cfg.edits)
                            ]
                        )
                    ),
                    "reached": reasons.count("reached") / cfg.edits,
                    "end_reasons": {r: reasons.count(r) / cfg.edits for r in sorted(set(reasons))},
                    "steps_median": float(statistics.median(r["steps"] for r in res)),
                    "seconds_median": float(statistics.median(r["seconds"] for r in res)),
                    "cpu_seconds_median": float(statistics.median(r["cpu_seconds"] for r in res)),
                }
            )
    if bar is not None:
        bar.close()
    return {"config": cfg.to_dict(), "rows": rows, "compare": compare(rows)}


def _mean_dist(points: list[np.ndarray], targets: list[np.ndarray]) -> float:
    return float(
        np.mean([np.linalg.norm(p - t, axis=1).mean() for p, t in zip(points, targets, strict=True)])
    )


def compare(rows: list[dict]) -> list[dict]:
    """The predictor against the optimiser on each (protocol, points) where both ran."""
    out = []
    for protocol, k in dict.fromkeys((r["protocol"], r["points"]) for r in rows):
        by = {r["method"]: r for r in rows if (r["protocol"], r["points"]) == (protocol, k)}
        if {"optimize", "predict"} <= set(by):
            o, p = by["optimize"], by["predict"]
            out.append(
                {
                    "protocol": protocol,
                    "points": k,
                    "speedup_cpu": o["cpu_seconds_median"] / max(p["cpu_seconds_median"], 1e-9),
                    "md_redetected_vs_optimize": p["md_redetected"] / max(o["md_redetected"], 1e-9),
                    "md_tracked_vs_optimize": p["md_tracked"] / max(o["md_tracked"], 1e-9),
                    "outside_change_vs_optimize": p["outside_change"] / max(o["outside_change"], 1e-9),
                }
            )
    return out


def evaluate_encoder(G: Generator, encoder: Any, n: int) -> dict:
    """PSNR (dB) of one encoder pass on ``n`` held-out generated images (bench_invert's set) and
    the median seconds per image (encoder + synthesis)."""
    from server.engine.encoder import encode
    from server.engine.project import psnr_uint8

    with torch.no_grad():
        ws = torch.cat([G.ws_from_seed(ENCODER_SEED + i, truncation_psi=0.7) for i in range(n)])
        dev = G.mapping.w_avg.device
        targets = to_uint8(G.synthesis(ws.to(dev), noise_mode="const")[0])
    psnrs, secs = [], []
    for img in targets:
        t0 = time.perf_counter()
        w = encode(encoder, img)
        with torch.no_grad():
            rec = to_uint8(G.synthesis(w.to(dev), noise_mode="const")[0])[0]
        secs.append(time.perf_counter() - t0)
        psnrs.append(min(psnr_uint8(rec, img), 99.0))
    return {
        "images": n,
        "psnr_mean": float(np.mean(psnrs)),
        "psnr_min": float(np.min(psnrs)),
        "seconds_median": float(statistics.median(secs)),
    }
