#!/usr/bin/env python
"""Train the Latent Regularizer (stage 1) and the Latent Predictor jointly with it (stage 2).

Stage 1 (no trajectories needed): the regularizer learns to denoise W rows. Clean rows are
mapping samples with a random truncation psi in [0.4, 1]; inputs are those plus Gaussian noise
of a random size and sparse outliers (``regularizer.perturb_latents``); MSE to the clean rows in
units of the per-dimension W std.

Stage 2: predictor and regularizer together on teacher trajectories (scripts/make_trajectories.py).
A training pair is (w_t, h_t, targets, h_{t+k} - h_t) -> w_{t+k}: k is the first step at which
the teacher's fastest handle has moved a random 0.5-1.5 sub-steps from h_t (10% of pairs take
the whole drag, t = 0 to the end, for the single-shot mode). The requested sub-step given to the
predictor is the teacher's own handle displacement (hindsight: the label is the latent that
produced exactly that motion); at inference it is ``min(substep, remaining)`` toward the target.
Loss (each term relative, about 1 for the identity map):

    latent   |w_{t+1} - w_{t+k}|^2 / |w_t - w_{t+k}|^2, in units of the W std, first n_rows rows,
             where w_{t+1} is the regularized prediction
    feature  |F(w_{t+1}) - F(w_{t+k})|_1 / |F(w_t) - F(w_{t+k})|_1, F = DragGAN's feature block
    motion   DragGAN's motion supervision made one-shot: for pixels q within r1 of each handle,
             |F(w_{t+1})(q + s) - sg(F(w_t)(q))|_1, relative to the same with F(w_t)
    local    (off by default, --local-weight) change away from the handles: |F(w_{t+1}) - F(w_t)|_1
             over the pixels farther than res / 8 from every handle, relative to the teacher's
             |F(w_{t+k}) - F(w_t)|_1 there (1 = as much as DragGAN changed them)
    denoise  the stage-1 loss on fresh mapping samples, so R stays a regularizer

The feature and motion terms put the generator in the loop (one forward and backward pass on
--feat-batch samples of each batch). Why: W+ is redundant (many latents draw nearly the same
image) and Adam's per-coordinate steps put much of the teacher's latent motion into directions
that change nothing visible, so latent MSE alone is a weak, noisy signal (on a first test it
learned no handle motion at all); the feature term measures the error where the drag and point
tracking look, the motion term asks directly for the requested move, and the latent term keeps
the prediction near the teacher's path, inside the region the generator was trained on.

Runs resume from <out>/stage{1,2}.pt (torch.save of tensors and plain containers only, read back
with weights_only=True); randomness is a function of (--seed, stage, iteration), so a resumed
run draws the same batches. The whole pipeline on the shipped model (docs/predictor.md):

    .venv/bin/python scripts/train_predictor.py --stage 1 --out runs/predictor
    .venv/bin/python scripts/train_predictor.py --stage 2 --out runs/predictor --traj runs/trajectories
    .venv/bin/python scripts/train_predictor.py --out runs/predictor \\
        --export server/assets/synthfaces_predictor.safetensors
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from server.engine.generator import Generator  # noqa: E402
from server.engine.predictor import LatentPredictor, PredictorConfig, count_parameters, latent_stats  # noqa: E402
from server.engine.predictor_io import GeneratorIdentity, PredictorBundle, save_predictor  # noqa: E402
from server.engine.regularizer import LatentRegularizer, RegularizerConfig, perturb_latents  # noqa: E402
from server.engine.tracking import resize_features  # noqa: E402


def _trajectories_module():
    spec = importlib.util.spec_from_file_location(
        "make_trajectories", Path(__file__).with_name("make_trajectories.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", type=int, choices=(1, 2), default=None, help="train stage 1 or 2")
    p.add_argument("--out", type=Path, default=Path("runs/predictor"), help="run directory")
    p.add_argument("--checkpoint", default=None, help="generator .safetensors (default: embedded model)")
    p.add_argument("--traj", type=Path, default=Path("runs/trajectories"), help="trajectory shards (stage 2)")
    p.add_argument("--iters", type=int, default=None, help="iterations (default: 3000 stage 1, 8000 stage 2)")
    p.add_argument("--batch", type=int, default=None, help="batch (default: 256 stage 1, 32 stage 2)")
    p.add_argument("--lr", type=float, default=None, help="AdamW lr (default: 1e-3 stage 1, 3e-4 stage 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda (default: cuda if available)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint of this stage")
    p.add_argument(
        "--minutes", type=float, default=None, help="stop cleanly (checkpoint) after this wall time"
    )
    p.add_argument("--ckpt-every", type=int, default=250)
    p.add_argument("--eval-every", type=int, default=250)
    # model shapes (stage 1 fixes the regularizer's, stage 2 the predictor's)
    p.add_argument("--n-rows", type=int, default=6, help="W+ rows predicted and regularized")
    p.add_argument("--reg-hidden", type=int, default=256)
    p.add_argument("--reg-blocks", type=int, default=3)
    p.add_argument("--alpha", type=float, default=0.5, help="regularizer strength (training and default)")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--enc-layers", type=int, default=3)
    p.add_argument("--dec-layers", type=int, default=3)
    p.add_argument("--grid", type=int, default=4)
    p.add_argument(
        "--feature-blocks", type=int, nargs="+", default=None, help="default: DragGAN block + one below"
    )
    # stage-2 data and loss
    p.add_argument("--substep", type=float, default=None, help="training sub-step, px (default res / 32)")
    p.add_argument("--p-single", type=float, default=0.1, help="share of whole-drag (single-shot) pairs")
    p.add_argument("--feat-weight", type=float, default=0.5, help="generator-in-the-loop feature term weight")
    p.add_argument(
        "--motion-weight", type=float, default=0.5, help="generator-in-the-loop motion term weight"
    )
    p.add_argument(
        "--local-weight",
        type=float,
        default=0.0,
        help="weight of the locality term (change away from the handles; 0: off)",
    )
    p.add_argument(
        "--feat-batch", type=int, default=8, help="samples per batch given the feature/motion terms"
    )
    p.add_argument("--reg-weight", type=float, default=0.1, help="weight of the denoising term in stage 2")
    p.add_argument("--val-frac", type=float, default=0.05, help="trajectories held out for validation")
    p.add_argument("--export", type=Path, default=None, help="write the predictor file from <out>/stage2.pt")
    p.add_argument(
        "--default",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="export: a recommended PredictOptions value stored in the file (e.g. max_steps=12, "
        "substep=4), chosen on validation seeds with bench_drag.py; repeatable",
    )
    p.add_argument("--no-progress", action="store_true")
    return p


# -- data ------------------------------------------------------------------------------------------


def clean_rows(G: Generator, n: int, n_rows: int, gen: torch.Generator) -> torch.Tensor:
    """[n, n_rows, D] independent mapping samples, each truncated by psi ~ U[0.4, 1]."""
    dev = G.mapping.w_avg.device
    z = torch.randn(n * n_rows, G.z_dim, generator=gen).to(dev)
    psi = (0.4 + 0.6 * torch.rand(n * n_rows, 1, generator=gen)).to(dev)
    with torch.no_grad():
        w = G.mapping(z)[:, 0]
        w = G.mapping.w_avg + psi * (w - G.mapping.w_avg)
    return w.reshape(n, n_rows, -1)


def denoise_loss(
    reg: LatentRegularizer, G: Generator, n: int, gen: torch.Generator
) -> tuple[torch.Tensor, float]:
    """Stage-1 loss on a fresh batch, and the same error before denoising (for the ratio)."""
    clean = clean_rows(G, n, reg.cfg.n_rows, gen)
    noisy = perturb_latents(clean, reg.w_std, gen)
    out = reg(noisy)
    loss = ((out - clean) / reg.w_std).square().mean()
    base = ((noisy - clean) / reg.w_std).square().mean().item()
    return loss, base


class Pairs:
    """Training pairs drawn from teacher trajectories (see the module docstring)."""

    def __init__(self, data: dict, traj_ids: np.ndarray, substep: float, p_single: float) -> None:
        self.w0 = data["w0"]
        self.dw = data["dw"]
        self.handles = data["handles"]
        self.targets = data["targets"]
        self.offsets = data["offsets"].numpy()
        self.n_points = data["n_points"].numpy()
        lengths = self.offsets[1:] - self.offsets[:-1]
        self.ids = np.asarray([i for i in traj_ids if lengths[i] >= 2])
        if len(self.ids) == 0:
            raise ValueError("no trajectory with at least 2 steps")
        self.substep = substep
        self.p_single = p_single
        self.n_rows = self.dw.shape[1]

    def pick(self, rng: np.random.Generator, tries: int = 10) -> tuple[int, int, int]:
        """(trajectory, t, k) for one pair; pairs in which no handle moved 0.5 px are drawn again
        (the teacher changed the latent without moving the points: no sub-step to learn)."""
        for _ in range(tries):
            i = int(rng.choice(self.ids))
            a, b = int(self.offsets[i]), int(self.offsets[i + 1])
            n = b - a
            kp = int(self.n_points[i])
            single = rng.random() < self.p_single
            t = 0 if single else int(rng.integers(0, n - 1))
            h = self.handles[a + t : b, :kp].numpy()  # [n - t, kp, 2]
            disp = np.linalg.norm(h[1:] - h[0], axis=-1).max(axis=1)  # [n - t - 1]
            if single:
                k = n - 1
            else:
                hit = np.nonzero(disp >= self.substep * rng.uniform(0.5, 1.5))[0]
                k = int(hit[0]) + 1 if len(hit) else n - 1 - t
            if disp[k - 1] >= 0.5:
                break
        return i, t, k

    def batch(self, n: int, rng: np.random.Generator, device: torch.device) -> dict[str, torch.Tensor]:
        picks = [self.pick(rng) for _ in range(n)]
        kmax = max(int(self.n_points[i]) for i, _, _ in picks)
        w_t = self.w0[[i for i, _, _ in picks]].clone()  # [B, num_ws, D]
        w_next = torch.empty(n, self.n_rows, w_t.shape[2])
        handles = torch.zeros(n, kmax, 2)
        targets, substep = torch.zeros_like(handles), torch.zeros_like(handles)
        progress = torch.zeros(n, kmax)
        valid = torch.zeros(n, kmax, dtype=torch.bool)
        for j, (i, t, k) in enumerate(picks):
            a, kp = int(self.offsets[i]), int(self.n_points[i])
            w_next[j] = w_t[j, : self.n_rows] + self.dw[a + t + k].float()
            w_t[j, : self.n_rows] += self.dw[a + t].float()
            h0, ht, hk = self.handles[a, :kp], self.handles[a + t, :kp], self.handles[a + t + k, :kp]
            tg = self.targets[i, :kp]
            handles[j, :kp], targets[j, :kp], substep[j, :kp] = ht, tg, hk - ht
            d0, dt = (tg - h0).norm(dim=1), (tg - ht).norm(dim=1)
            progress[j, :kp] = torch.where(d0 > 1e-6, 1 - dt / d0.clamp(min=1e-6), torch.ones_like(d0)).clamp(
                0, 1
            )
            valid[j, :kp] = True
        out = dict(
            w_t=w_t, w_next=w_next, handles=handles, targets=targets, substep=substep, progress=progress
        )
        out["valid"] = valid
        return {k: v.to(device) for k, v in out.items()}


def stage2_losses(
    P: LatentPredictor,
    R: LatentRegularizer,
    G: Generator,
    b: dict[str, torch.Tensor],
    alpha: float,
    feat_weight: float,
    feat_batch: int,
    motion_weight: float = 0.0,
    local_weight: float = 0.0,
) -> dict[str, torch.Tensor]:
    """The relative latent loss and, with the generator in the loop on ``feat_batch`` samples,
    the relative feature, motion and locality losses of one batch (see the module docstring)."""
    n = P.cfg.n_rows
    track = G.default_feature_block()
    blocks = tuple(sorted(set(P.cfg.feature_blocks) | {track}))
    with torch.no_grad():
        _, feats = G.synthesis(b["w_t"], feature_blocks=blocks)
    rows = b["w_t"][:, :n]
    pfeats = [feats[r] for r in P.cfg.feature_blocks]
    pred = P(rows, pfeats, b["handles"], b["targets"], b["substep"], b["progress"], b["valid"])
    out = R.regularize_step(rows, pred, alpha)
    err = ((out - b["w_next"]) / P.w_std).square().mean()
    base = ((rows - b["w_next"]) / P.w_std).square().mean().clamp(min=1e-12)
    losses = {"latent": err / base}
    if (feat_weight > 0 or motion_weight > 0 or local_weight > 0) and feat_batch > 0:
        m = min(feat_batch, len(rows))
        size = (G.img_resolution, G.img_resolution)
        ws_pred = torch.cat([out[:m], b["w_t"][:m, n:]], dim=1)
        f_pred = resize_features([G.synthesis(ws_pred, feature_blocks=(track,))[1][track]], size)
        f_t = resize_features([feats[track][:m]], size)
        if feat_weight > 0 or local_weight > 0:
            ws_next = torch.cat([b["w_next"][:m], b["w_t"][:m, n:]], dim=1)
            with torch.no_grad():
                f_next = resize_features([G.synthesis(ws_next, feature_blocks=(track,))[1][track]], size)
        if feat_weight > 0:
            denom = (f_t - f_next).abs().sum().clamp(min=1e-6)
            losses["feature"] = (f_pred - f_next).abs().sum() / denom
        if local_weight > 0:
            far = far_from_handles(b["handles"][:m], b["valid"][:m], size, G.img_resolution / 8)
            with torch.no_grad():
                denom = ((f_next - f_t).abs() * far).sum().clamp(min=1e-6)
            losses["local"] = ((f_pred - f_t).abs() * far).sum() / denom
        if motion_weight > 0:
            h, s, v = b["handles"][:m], b["substep"][:m], b["valid"][:m]
            losses["motion"] = motion_loss(f_pred, f_t, h, s, v & (s.norm(dim=-1) > 0.5))
    return losses


def far_from_handles(
    handles: torch.Tensor, valid: torch.Tensor, size: tuple[int, int], radius: float
) -> torch.Tensor:
    """[B, 1, H, W] float mask: 1 where a pixel lies farther than ``radius`` from every valid handle
    (handles [B, K, 2] pixels x, y; valid bool [B, K])."""
    hgt, wid = size
    ys = torch.arange(hgt, dtype=torch.float32, device=handles.device)
    xs = torch.arange(wid, dtype=torch.float32, device=handles.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    dx = gx[None, None] - handles[..., 0, None, None]  # [B, K, H, W]
    dy = gy[None, None] - handles[..., 1, None, None]
    near = (dx.square() + dy.square() <= radius * radius) & valid[..., None, None]
    return (~near.any(1, keepdim=True)).float()


def motion_loss(
    f_pred: torch.Tensor, f_t: torch.Tensor, handles: torch.Tensor, substep: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Did the content move by the sub-step? For pixels q within r1 of each handle,
    |F_pred(q + s) - sg(F_t(q))|_1, relative to the same for the unchanged features F_t.

    f_pred, f_t [B, C, H, W] (image size); handles, substep [B, K, 2] pixels; valid bool [B, K].
    """
    b, _, hgt, wid = f_t.shape
    r1 = max(2, round(3 * wid / 512))
    r = torch.arange(-r1, r1 + 1, dtype=torch.float32, device=f_t.device)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    disk = torch.stack([dx.flatten(), dy.flatten()], 1)
    disk = disk[disk.square().sum(1) < r1 * r1]  # [S, 2]
    q = handles.round()[:, :, None, :] + disk  # [B, K, S, 2]
    ok = valid[:, :, None] & (q >= 0).all(-1) & (q[..., 0] <= wid - 1) & (q[..., 1] <= hgt - 1)

    def sample(f: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:  # -> [B, C, K, S]
        g = torch.stack([pts[..., 0] / (wid - 1) * 2 - 1, pts[..., 1] / (hgt - 1) * 2 - 1], -1)
        return torch.nn.functional.grid_sample(f, g, mode="bilinear", align_corners=True)

    anchor = sample(f_t, q).detach()
    moved = q + substep[:, :, None, :]
    w = ok[:, None].float()
    num = ((sample(f_pred, moved) - anchor).abs() * w).sum()
    with torch.no_grad():
        den = ((sample(f_t, moved) - anchor).abs() * w).sum().clamp(min=1e-6)
    return num / den


# -- checkpoints -----------------------------------------------------------------------------------


def save_ckpt(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def lr_at(it: int, iters: int, base: float, warmup: int = 200) -> float:
    if it < warmup:
        return base * (it + 1) / warmup
    frac = (it - warmup) / max(1, iters - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def iteration_rngs(
    seed: int, stage: int, it: int, device: torch.device
) -> tuple[np.random.Generator, torch.Generator]:
    rng = np.random.default_rng([seed, stage, it])
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    return rng, gen


def log(out: Path, rec: dict) -> None:
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")


# -- stages ----------------------------------------------------------------------------------------


def train_stage1(G: Generator, args: argparse.Namespace, device: torch.device, bar_factory) -> dict:
    out: Path = args.out
    path = out / "stage1.pt"
    iters, batch, lr = args.iters or 3000, args.batch or 256, args.lr or 1e-3
    identity = GeneratorIdentity.of(G)
    if path.is_file() and not args.restart:
        st = load_ckpt(path)
        check_identity(st, identity, path)
        rcfg = RegularizerConfig.from_dict(st["rcfg"])
    else:
        st = None
        rcfg = RegularizerConfig(
            w_dim=G.w_dim,
            n_rows=min(args.n_rows, G.num_ws),
            hidden=args.reg_hidden,
            blocks=args.reg_blocks,
            alpha=args.alpha,
        )
    R = LatentRegularizer(rcfg).to(device)
    opt = torch.optim.AdamW(R.parameters(), lr=lr, weight_decay=1e-4)
    start = 0
    if st is not None:
        R.load_state_dict(st["regularizer"])
        opt.load_state_dict(st["opt"])
        start = st["iter"]
    else:
        mean, std = latent_stats(G, n=8192, seed=args.seed)
        R.w_avg.copy_(mean)
        R.w_std.copy_(std)
    print(f"stage 1: regularizer {count_parameters(R) / 1e6:.2f} M parameters, iterations {start}..{iters}")

    def state(it: int) -> dict:
        return {
            "regularizer": R.state_dict(),
            "opt": opt.state_dict(),
            "iter": it,
            "rcfg": rcfg.to_dict(),
            "identity": identity.to_dict(),
            "args": _jsonable(vars(args)),
        }

    t0 = time.perf_counter()
    bar = bar_factory(total=iters, initial=start, desc="stage 1")
    ema = None
    it = start
    while it < iters:
        rng, gen = iteration_rngs(args.seed, 1, it, device)
        for g in opt.param_groups:
            g["lr"] = lr_at(it, iters, lr)
        loss, base = denoise_loss(R, G, batch, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(R.parameters(), 1.0)
        opt.step()
        it += 1
        ratio = loss.item() / max(base, 1e-12)
        ema = ratio if ema is None else 0.98 * ema + 0.02 * ratio
        bar.update(1)
        bar.set_postfix(ratio=f"{ema:.3f}")
        if it % args.eval_every == 0 or it == iters:
            log(out, {"stage": 1, "iter": it, "loss": loss.item(), "noisy": base, "ratio_ema": ema})
        if it % args.ckpt_every == 0 or it == iters:
            save_ckpt(path, state(it))
        if args.minutes is not None and time.perf_counter() - t0 > 60 * args.minutes:
            save_ckpt(path, state(it))
            print(f"stopped after {args.minutes} min at iteration {it}; run again to resume")
            break
    bar.close()
    return {"iter": it, "ratio_ema": ema}


def check_identity(st: dict, identity: GeneratorIdentity, path: Path) -> None:
    got = st["identity"]
    if (got["config_hash"], got["weights_hash"]) != (identity.config_hash, identity.weights_hash):
        raise SystemExit(f"{path} belongs to another generator ({got}); use another --out or --restart")


def train_stage2(G: Generator, args: argparse.Namespace, device: torch.device, bar_factory) -> dict:
    out: Path = args.out
    path, p1 = out / "stage2.pt", out / "stage1.pt"
    iters, batch, lr = args.iters or 8000, args.batch or 32, args.lr or 3e-4
    identity = GeneratorIdentity.of(G)
    substep = args.substep if args.substep is not None else G.img_resolution / 32
    mt = _trajectories_module()
    shards = sorted(args.traj.glob("shard_*.safetensors"))
    data = mt.read_shards(shards, identity)
    n_traj = len(data["n_points"])
    order = np.random.default_rng([args.seed, 99]).permutation(n_traj)
    n_val = max(1, int(round(args.val_frac * n_traj))) if n_traj > 1 else 0
    train_pairs = Pairs(data, np.sort(order[n_val:]), substep, args.p_single)
    val_pairs = Pairs(data, np.sort(order[:n_val]), substep, args.p_single) if n_val else None
    print(f"stage 2: {len(shards)} shards, {n_traj} trajectories ({n_val} held out), {len(data['dw'])} steps")

    if path.is_file() and not args.restart:
        st = load_ckpt(path)
        check_identity(st, identity, path)
        pcfg, rcfg = PredictorConfig.from_dict(st["pcfg"]), RegularizerConfig.from_dict(st["rcfg"])
    else:
        if not p1.is_file():
            raise SystemExit(f"{p1} not found: run stage 1 first")
        st1 = load_ckpt(p1)
        check_identity(st1, identity, p1)
        rcfg = RegularizerConfig.from_dict(st1["rcfg"])
        pcfg = PredictorConfig.for_generator(
            G,
            feature_blocks=tuple(args.feature_blocks) if args.feature_blocks else None,
            n_rows=rcfg.n_rows,
            d_model=args.d_model,
            n_heads=args.heads,
            enc_layers=args.enc_layers,
            dec_layers=args.dec_layers,
            grid=args.grid,
        )
        st = None
    if data["dw"].shape[1] != pcfg.n_rows:
        raise SystemExit(
            f"trajectories record {data['dw'].shape[1]} rows, the predictor predicts {pcfg.n_rows}"
        )
    P, R = LatentPredictor(pcfg).to(device), LatentRegularizer(rcfg).to(device)
    opt = torch.optim.AdamW(
        [{"params": P.parameters(), "scale": 1.0}, {"params": R.parameters(), "scale": 0.3}],
        lr=lr,
        weight_decay=1e-4,
    )
    start = 0
    if st is not None:
        P.load_state_dict(st["predictor"])
        R.load_state_dict(st["regularizer"])
        opt.load_state_dict(st["opt"])
        start = st["iter"]
    else:
        R.load_state_dict(st1["regularizer"])
        P.w_avg.copy_(R.w_avg)
        P.w_std.copy_(R.w_std)
    alpha = rcfg.alpha
    print(
        f"predictor {count_parameters(P) / 1e6:.2f} M + regularizer {count_parameters(R) / 1e6:.2f} M "
        f"parameters, sub-step {substep:g} px, iterations {start}..{iters}"
    )
    val_batches = []
    if val_pairs is not None:
        vrng = np.random.default_rng([args.seed, 77])
        val_batches = [val_pairs.batch(batch, vrng, device) for _ in range(4)]

    loss_args = (args.feat_weight, args.feat_batch, args.motion_weight, args.local_weight)

    def evaluate() -> dict:
        if not val_batches:
            return {}
        P.eval()
        R.eval()
        with torch.no_grad():
            ls = [stage2_losses(P, R, G, vb, alpha, *loss_args) for vb in val_batches]
        P.train()
        R.train()
        return {f"val_{k}": float(np.mean([d[k].item() for d in ls])) for k in ls[0]}

    def state(it: int) -> dict:
        return {
            "predictor": P.state_dict(),
            "regularizer": R.state_dict(),
            "opt": opt.state_dict(),
            "iter": it,
            "pcfg": pcfg.to_dict(),
            "rcfg": rcfg.to_dict(),
            "identity": identity.to_dict(),
            "substep": substep,
            "n_traj": n_traj,
            "args": _jsonable(vars(args)),
        }

    t0 = time.perf_counter()
    bar = bar_factory(total=iters, initial=start, desc="stage 2")
    ema: dict[str, float] = {}
    it = start
    last_eval: dict = {}
    while it < iters:
        rng, gen = iteration_rngs(args.seed, 2, it, device)
        for g in opt.param_groups:
            g["lr"] = lr_at(it, iters, lr) * g["scale"]
        b = train_pairs.batch(batch, rng, device)
        losses = stage2_losses(P, R, G, b, alpha, *loss_args)
        total = losses["latent"] + args.feat_weight * losses.get("feature", 0.0)
        total = total + args.motion_weight * losses.get("motion", 0.0)
        total = total + args.local_weight * losses.get("local", 0.0)
        if args.reg_weight > 0:
            dn, _ = denoise_loss(R, G, 64, gen)
            losses["denoise"] = dn
            total = total + args.reg_weight * dn
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(list(P.parameters()) + list(R.parameters()), 1.0)
        opt.step()
        it += 1
        for k, v in losses.items():
            ema[k] = v.item() if k not in ema else 0.98 * ema[k] + 0.02 * v.item()
        bar.update(1)
        bar.set_postfix({k[:4]: f"{v:.3f}" for k, v in ema.items()})
        if it % args.eval_every == 0 or it == iters:
            last_eval = evaluate()
            log(out, {"stage": 2, "iter": it, **{f"ema_{k}": v for k, v in ema.items()}, **last_eval})
        if it % args.ckpt_every == 0 or it == iters:
            save_ckpt(path, state(it))
        if args.minutes is not None and time.perf_counter() - t0 > 60 * args.minutes:
            save_ckpt(path, state(it))
            print(f"stopped after {args.minutes} min at iteration {it}; run again to resume")
            break
    bar.close()
    return {"iter": it, **ema, **last_eval}


def parse_defaults(items: list[str]) -> dict:
    """``KEY=VALUE`` pairs -> recommended PredictOptions for the exported file (checked by PredictOptions)."""
    from server.engine.predict_options import PredictOptions

    try:
        return PredictOptions.parse_changes(items)
    except ValueError as e:
        raise SystemExit(f"--default {e}") from None


def export(G: Generator, args: argparse.Namespace) -> Path:
    path = args.out / "stage2.pt"
    if not path.is_file():
        raise SystemExit(f"{path} not found: train stage 2 first")
    st = load_ckpt(path)
    identity = GeneratorIdentity.of(G)
    check_identity(st, identity, path)
    P = LatentPredictor(PredictorConfig.from_dict(st["pcfg"]))
    R = LatentRegularizer(RegularizerConfig.from_dict(st["rcfg"]))
    P.load_state_dict(st["predictor"])
    R.load_state_dict(st["regularizer"])
    evals = []
    log_path = args.out / "log.jsonl"
    if log_path.is_file():
        evals = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    last2 = [e for e in evals if e.get("stage") == 2]
    training = {
        "stage2_iters": st["iter"],
        "trajectories": st["n_traj"],
        "substep_px": st["substep"],
        "seed": st["args"].get("seed"),
        "feat_weight": st["args"].get("feat_weight"),
        "last_log": last2[-1] if last2 else None,
    }
    defaults = {"substep": st["substep"], **parse_defaults(args.default)}
    training["inference_defaults"] = " ".join(args.default) if args.default else "as trained"
    bundle = PredictorBundle(P, R, identity, defaults=defaults, training=training)
    out = save_predictor(bundle, args.export, half=True)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return out


def _jsonable(d: dict) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.stage is None and args.export is None:
        raise SystemExit("give --stage 1, --stage 2 or --export PATH")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from server.cli.common import pick_device, progress
    from server.engine.checkpoint import load_generator

    device = pick_device(args.device)
    G = load_generator(args.checkpoint, device=device)
    args.out.mkdir(parents=True, exist_ok=True)

    def bar_factory(total: int, initial: int, desc: str):
        b = progress(total=total, desc=desc, disable=True if args.no_progress else None)
        b.update(initial)
        return b

    if args.stage == 1:
        print(json.dumps(train_stage1(G, args, device, bar_factory)))
    elif args.stage == 2:
        print(json.dumps(train_stage2(G, args, device, bar_factory)))
    if args.export is not None:
        export(G, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
