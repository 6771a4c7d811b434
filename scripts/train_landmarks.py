#!/usr/bin/env python
"""Train the SynthFaces landmark detector on rendered faces with exact labels.

Reproduces server/assets/landmarks.safetensors:

    nohup .venv/bin/python scripts/train_landmarks.py > runs/landmarks/log.txt 2>&1 &

Training faces are seeds [0, n_train); validation seeds start at 1_001_000 and the held-out
evaluation in docs/synthfaces.md uses seeds 1_000_000..1_000_999, so they never overlap.
One CPU thread by default (the other core trains the GAN). Resumable: rerun the same command
and it continues from runs/landmarks/ckpt.pt; each step's batch and augmentation come from
generators seeded by (seed, step), so a resumed run sees the same data as an unbroken one.

The learning rate follows a cosine over --steps (8000) but the shipped weights are the EMA at
--stop-at (4000): on the shared 2-core machine the second half would have cost another ~20 CPU
minutes (hours of wall time at the CPU share it got) while validation error was falling slowly
(0.410 px at step 3250, 0.385 px at step 4000).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.synthfaces import LANDMARK_GROUPS, face_size, render_batch  # noqa: E402
from server.synthfaces.detector import DetectorConfig, LandmarkDetector, save_detector  # noqa: E402
from server.synthfaces.landmarks import FLIP_INDEX  # noqa: E402

VAL_SEED0 = 1_001_000
EVAL_SEED0 = 1_000_000


def load_or_render(path: Path, seeds: range, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Rendered faces for ``seeds``, cached as .npz (rendering 40k faces takes about 2 minutes)."""
    if path.is_file():
        z = np.load(path)
        return z["images"], z["landmarks"]
    from tqdm import tqdm

    images = np.empty((len(seeds), size, size, 3), np.uint8)
    lms = np.empty((len(seeds), 30, 2), np.float32)
    chunk = 1000
    for i in tqdm(range(0, len(seeds), chunk), desc=f"render {path.name}", mininterval=10):
        images[i : i + chunk], lms[i : i + chunk] = render_batch(seeds[i : i + chunk], size)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, images=images, landmarks=lms)
    tmp.replace(path)
    return images, lms


def augment(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip, small affine, colour jitter, blur, down-up sampling and noise; landmarks follow exactly.

    x: [N, 3, S, S] float in [0, 1]; y: [N, K, 2] pixels (pixel i spans [i, i+1)).
    """
    n, _, s, _ = x.shape
    r = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    # horizontal flip: x -> S - x, and left/right landmarks swap names
    flip = r(n) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    yf = y[:, FLIP_INDEX].clone()
    yf[..., 0] = s - yf[..., 0]
    y = torch.where(flip[:, None, None], yf, y)
    # affine (output normalised coords u map to input coords A u + t; align_corners=False)
    use = (r(n) < 0.7).float()
    ang = (r(n) * 2 - 1) * math.radians(8) * use
    sc = 1 + (r(n) * 2 - 1) * 0.08 * use
    tr = (r(n, 2) * 2 - 1) * (3.0 * 2 / s) * use[:, None]
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    A = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # [N, 2, 2]
    theta = torch.cat([A, tr[:, :, None]], 2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    u_in = y / s * 2 - 1
    u_out = torch.linalg.solve(A[:, None], (u_in - tr[:, None])[..., None])[..., 0]
    y = (u_out + 1) / 2 * s
    # colour: brightness, contrast, saturation, per-channel gain, gamma
    b = 1 + (r(n, 1, 1, 1) * 2 - 1) * 0.15
    c = 1 + (r(n, 1, 1, 1) * 2 - 1) * 0.15
    sat = 1 + (r(n, 1, 1, 1) * 2 - 1) * 0.25
    gain = 1 + (r(n, 3, 1, 1) * 2 - 1) * 0.06
    gray = x.mean(1, keepdim=True)
    x = gray + (x - gray) * sat
    m = x.mean((1, 2, 3), keepdim=True)
    x = ((x - m) * c + m) * b * gain
    x = x.clamp(0, 1) ** (1 + (r(n, 1, 1, 1) * 2 - 1) * 0.2)
    # blur (40%): 5-tap gaussian, sigma 0.3..1.1 px
    sig = 0.3 + 0.8 * r(n)
    k = torch.exp(-(torch.arange(-2, 3).float()[None] ** 2) / (2 * sig[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)
    blur = r(n) < 0.4
    if blur.any():
        xb = x[blur]
        kb = k[blur]
        nb = xb.shape[0]
        xb = xb.reshape(1, nb * 3, s, s)
        kx = kb.repeat_interleave(3, 0)[:, None, None, :]  # [nb*3, 1, 1, 5]
        xb = F.conv2d(F.pad(xb, (2, 2, 0, 0), mode="replicate"), kx, groups=nb * 3)
        xb = F.conv2d(F.pad(xb, (0, 0, 2, 2), mode="replicate"), kx.transpose(2, 3), groups=nb * 3)
        x = x.clone()
        x[blur] = xb.reshape(nb, 3, s, s)
    # down-up sampling (20%): GAN samples are often softer than the renderer's edges
    du = r(n) < 0.2
    if du.any():
        lo = int(s * (0.5 + 0.25 * float(r(1))))
        xd = F.interpolate(x[du], size=(lo, lo), mode="bilinear", antialias=True, align_corners=False)
        x = x.clone()
        x[du] = F.interpolate(xd, size=(s, s), mode="bilinear", align_corners=False)
    # noise (50%): gaussian, sigma up to 0.03
    noise = torch.randn(x.shape, generator=g) * (0.03 * r(n, 1, 1, 1)) * (r(n, 1, 1, 1) < 0.5)
    return (x + noise).clamp(0, 1), y


@torch.no_grad()
def evaluate(model: LandmarkDetector, images: np.ndarray, lms: np.ndarray) -> dict:
    """Mean error in pixels (overall and per group) and as a fraction of face size."""
    was_training = model.training
    model.eval()
    preds = []
    for i in range(0, len(images), 250):
        x = torch.from_numpy(images[i : i + 250]).permute(0, 3, 1, 2).float() / 255
        preds.append(model(x).numpy())
    model.train(was_training)
    err = np.linalg.norm(np.concatenate(preds) - lms, axis=-1)  # [N, K]
    out = {"mean_px": float(err.mean()), "median_px": float(np.median(err))}
    out["mean_frac_face"] = float((err.mean(1) / face_size(lms)).mean())
    out["p95_px"] = float(np.percentile(err, 95))
    for g in ("jaw", "left_brow", "left_eye", "nose", "mouth"):
        out[f"{g}_px"] = float(err[:, LANDMARK_GROUPS[g]].mean())
    return out


def measure(ship: str, out: Path) -> dict:
    """The numbers in docs/synthfaces.md: detector error, FID floor and sensitivity, render speed."""
    from server.synthfaces import render_seed
    from server.synthfaces.detector import load_detector
    from server.synthfaces.fid import frechet_distance

    det = load_detector(ship)
    res: dict = {}
    ev_img, ev_lm = load_or_render(out / "eval_1000_64.npz", range(EVAL_SEED0, EVAL_SEED0 + 1000), 64)
    res["heldout_64"] = evaluate(det.model, ev_img, ev_lm)
    big = render_batch(range(EVAL_SEED0, EVAL_SEED0 + 200), 128)
    err = np.linalg.norm(det.detect(big[0]) - big[1], axis=-1)
    res["heldout_128_first200"] = {
        "mean_px": float(err.mean()),
        "mean_frac_face": float((err.mean(1) / face_size(big[1])).mean()),
    }
    a, _ = load_or_render(out / "fid_a_2000_64.npz", range(3_000_000, 3_002_000), 64)
    b, _ = load_or_render(out / "fid_b_2000_64.npz", range(3_002_000, 3_004_000), 64)
    fa, fb = det.features(a), det.features(b)
    res["fid_floor_2000_vs_2000"] = frechet_distance(fa, fb)
    res["fid_same_set"] = frechet_distance(fa, fa)
    g = torch.Generator().manual_seed(0)
    xb = torch.from_numpy(b).permute(0, 3, 1, 2).float() / 255
    k = torch.exp(-(torch.arange(-2, 3).float() ** 2) / (2 * 0.8**2))
    k = (k / k.sum()).repeat(3, 1)[:, None, None, :]
    blurred = F.conv2d(F.pad(xb, (2, 2, 0, 0), mode="replicate"), k, groups=3)
    blurred = F.conv2d(F.pad(blurred, (0, 0, 2, 2), mode="replicate"), k.transpose(2, 3), groups=3)
    res["fid_vs_blur_sigma0.8"] = frechet_distance(fa, det.features(blurred))
    noisy = (xb + 0.05 * torch.randn(xb.shape, generator=g)).clamp(0, 1)
    res["fid_vs_noise_0.05"] = frechet_distance(fa, det.features(noisy))
    half = F.interpolate(xb, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    res["fid_vs_downup_32"] = frechet_distance(
        fa, det.features(F.interpolate(half, size=(64, 64), mode="bilinear"))
    )
    # CPU time of this process (the machine is shared; wall time would count the neighbours)
    for size, n in ((64, 1000), (128, 500)):
        render_seed(0, size)
        t = time.process_time()
        for sd in range(n):
            render_seed(sd, size)
        res[f"render_cpu_ms_{size}"] = (time.process_time() - t) / n * 1000
    t = time.process_time()
    det.detect(ev_img)
    res["detect_cpu_ms_per_image_64"] = (time.process_time() - t) / len(ev_img) * 1000
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/landmarks", help="run folder (data cache, checkpoint, log)")
    ap.add_argument("--ship", default="server/assets/landmarks.safetensors", help="final fp16 weights")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=40000, help="training faces (seeds 0..n-1)")
    ap.add_argument("--n-val", type=int, default=500)
    ap.add_argument("--steps", type=int, default=8000, help="length of the learning-rate schedule")
    ap.add_argument("--stop-at", type=int, default=4000, help="ship the EMA weights at this step")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--ema", type=float, default=0.998, help="EMA decay of the shipped weights")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--every", type=int, default=250, help="checkpoint / validation interval")
    ap.add_argument("--measure", action="store_true", help="only measure the shipped weights (docs numbers)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.measure:
        print(json.dumps(measure(args.ship, out), indent=1))
        return 0
    cfg = DetectorConfig()
    size = cfg.input_size
    tr_img, tr_lm = load_or_render(out / f"train_{args.n_train}_{size}.npz", range(args.n_train), size)
    va_img, va_lm = load_or_render(
        out / f"val_{args.n_val}_{size}.npz", range(VAL_SEED0, VAL_SEED0 + args.n_val), size
    )

    torch.manual_seed(args.seed)
    model = LandmarkDetector(cfg)
    ema = LandmarkDetector(cfg)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    step, t_used = 0, 0.0
    ckpt_path = out / "ckpt.pt"
    if ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        step, t_used = ck["step"], ck["seconds"]
        print(f"resumed from {ckpt_path} at step {step}", flush=True)

    def lr_at(i: int) -> float:
        warm = 200
        if i < warm:
            return args.lr * (i + 1) / warm
        q = (i - warm) / max(1, args.steps - warm)
        return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * q)))

    from tqdm import tqdm

    stop = min(args.stop_at, args.steps)
    bar = tqdm(total=stop, initial=step, desc="landmarks", mininterval=30, dynamic_ncols=False)
    t0 = time.time() - t_used
    run_loss = 0.0
    model.train()
    while step < stop:
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        idx = torch.randint(0, len(tr_img), (args.batch,), generator=g).numpy()
        x = torch.from_numpy(tr_img[idx]).permute(0, 3, 1, 2).float() / 255
        y = torch.from_numpy(tr_lm[idx])
        x, y = augment(x, y, g)
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step)
        loss = (model(x) - y).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            d = min(args.ema, (1 + step) / (10 + step))
            for pe, pm in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
                if pe.is_floating_point():
                    pe.lerp_(pm, 1 - d)
                else:
                    pe.copy_(pm)
        step += 1
        run_loss += loss.detach().item()
        bar.update(1)
        if step % args.every == 0 or step == stop:
            val = evaluate(ema, va_img, va_lm)
            elapsed = time.time() - t0
            print(
                f"step {step} loss {run_loss / args.every:.4f} lr {lr_at(step - 1):.2e} "
                f"val mean {val['mean_px']:.3f}px (jaw {val['jaw_px']:.3f}, eye {val['left_eye_px']:.3f}, "
                f"mouth {val['mouth_px']:.3f}) {elapsed / 60:.1f} min",
                flush=True,
            )
            run_loss = 0.0
            tmp = ckpt_path.with_suffix(".tmp")
            state = {"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict()}
            torch.save({**state, "step": step, "seconds": elapsed}, tmp)
            tmp.replace(ckpt_path)
    bar.close()

    # held-out evaluation on seeds disjoint from training and validation
    ev_img, ev_lm = load_or_render(out / f"eval_1000_{size}.npz", range(EVAL_SEED0, EVAL_SEED0 + 1000), size)
    final = evaluate(ema, ev_img, ev_lm)
    final["train_minutes"] = round((time.time() - t0) / 60, 1)
    print("held-out (seeds 1000000..1000999):", json.dumps(final, indent=1), flush=True)
    meta = {
        "train": {k: v for k, v in vars(args).items() if k not in ("out", "ship")},
        "heldout_eval": final,
    }
    # z-scoring statistics for features() (the FID-style score), from 2000 faces
    st_img, _ = load_or_render(out / "fid_a_2000_64.npz", range(3_000_000, 3_002_000), size)
    with torch.no_grad():
        ema.eval()
        f = torch.cat(
            [
                ema.pooled_features(torch.from_numpy(st_img[i : i + 250]).permute(0, 3, 1, 2).float() / 255)
                for i in range(0, len(st_img), 250)
            ]
        ).double()
    stats = (f.mean(0), f.std(0).clamp(min=1e-6))
    save_detector(ema, args.ship, extra_meta=meta, feature_stats=stats)
    print(f"wrote {args.ship}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
