"""Train the image -> W+ encoder (server/engine/encoder.py) on images of its own generator.

Data are generated only: W+ latents are sampled (mapping of random z, a random truncation psi in
[psi_min, 1], style mixing between two w at a random crossover row so W+ rows differ, and a small
Gaussian perturbation in units of the W std) and synthesised with the frozen generator
(noise_mode const). To spend the CPU on the encoder rather than on the generator, samples live in
a pool that is refreshed a few items per step.

Losses: the latent MSE in units of the per-dimension W std, plus (after ``--image-after`` steps)
an image loss on a sub-batch: the encoder's latent is synthesised (generator frozen, gradients
flow through it) and compared with the target by pixel L1 + MSE and the perceptual distance of
server/engine/perceptual.py.

Every ``--log-every`` steps: a log line with the losses and the PSNR of encoder reconstructions of
a fixed held-out batch; every ``--grid-every`` steps and at the end: a PNG grid whose rows are
target | encoder | encoder + 30 optimisation steps. Resumable: ``OUT/ckpt.pt`` (tensors and plain
containers, loaded with weights_only=True) is written every ``--ckpt-every`` steps and at the end;
rerun the same command to continue. ``--minutes`` stops a chunk early (the CPU is shared).

    python scripts/train_encoder.py --out runs/encoder --threads 1 --steps 3000 --minutes 12
    python scripts/train_encoder.py --out runs/encoder --threads 1 --steps 3000 \
        --export server/assets/synthfaces_encoder.safetensors
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.engine.checkpoint import load_generator  # noqa: E402
from server.engine.encoder import Encoder, EncoderConfig, save_encoder  # noqa: E402
from server.engine.generator import Generator, to_uint8  # noqa: E402
from server.engine.media import make_grid, upscale  # noqa: E402
from server.engine.perceptual import PerceptualDistance  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/encoder", help="run folder (checkpoint, log, grids)")
    p.add_argument("--checkpoint", default=None, help="generator (default: embedded SynthFaces model)")
    p.add_argument("--steps", type=int, default=3000, help="total optimiser steps (sets the lr schedule)")
    p.add_argument("--minutes", type=float, default=0.0, help="stop this chunk after this long (0: no limit)")
    p.add_argument("--batch", type=int, default=32, help="latent-loss batch")
    p.add_argument("--image-batch", type=int, default=8, help="image-loss sub-batch")
    p.add_argument("--image-after", type=int, default=1000, help="add the image loss from this step on")
    p.add_argument("--pool", type=int, default=2048, help="generated samples kept in memory")
    p.add_argument("--refresh", type=int, default=8, help="pool samples replaced per step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-min", type=float, default=5e-5, help="cosine schedule floor")
    p.add_argument("--latent-weight", type=float, default=1.0)
    p.add_argument("--l1-weight", type=float, default=1.0)
    p.add_argument("--mse-weight", type=float, default=1.0)
    p.add_argument("--perceptual-weight", type=float, default=1.0)
    p.add_argument("--psi-min", type=float, default=0.5)
    p.add_argument("--mix-prob", type=float, default=0.9)
    p.add_argument("--perturb", type=float, default=0.1, help="max Gaussian perturbation (units of W std)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--held-out", type=int, default=32)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--grid-every", type=int, default=500)
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    p.add_argument("--export", default=None, help="write the encoder file here at the end")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------- data


@torch.no_grad()
def latent_stats(G: Generator, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and per-dimension std of W under the mapping (psi = 1)."""
    dev = G.mapping.w_avg.device
    z = torch.randn(n, G.z_dim, generator=gen).to(dev)
    w = G.mapping(z)[:, 0]
    return G.mapping.w_avg.clone(), w.std(0)


@torch.no_grad()
def sample_wplus(
    G: Generator, n: int, gen: torch.Generator, w_std: torch.Tensor, args: argparse.Namespace
) -> torch.Tensor:
    """W+ [n, num_ws, w_dim]: truncated, style-mixed, perturbed mapping outputs."""
    dev = G.mapping.w_avg.device
    z = torch.randn(2 * n, G.z_dim, generator=gen).to(dev)
    w = G.mapping(z)  # [2n, num_ws, w_dim], rows identical
    psi = (args.psi_min + (1 - args.psi_min) * torch.rand(2 * n, 1, 1, generator=gen)).to(dev)
    w = G.mapping.w_avg + psi * (w - G.mapping.w_avg)
    wa, wb = w[:n], w[n:]
    cut = torch.randint(1, G.num_ws, (n,), generator=gen).to(dev)
    mix = (torch.rand(n, generator=gen) < args.mix_prob).to(dev)
    rows = torch.arange(G.num_ws, device=dev)[None]
    use_b = (rows >= cut[:, None]) & mix[:, None]
    w = torch.where(use_b[..., None], wb, wa)
    sigma = (args.perturb * torch.rand(n, 1, 1, generator=gen)).to(dev)
    noise = torch.randn(w.shape, generator=gen).to(dev)
    return w + sigma * noise * w_std


@torch.no_grad()
def synth(G: Generator, w: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    return torch.cat([G.synthesis(w[i : i + chunk], noise_mode="const")[0] for i in range(0, len(w), chunk)])


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = (a.clamp(-1, 1) - b.clamp(-1, 1)).square().flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-10))


# ----------------------------------------------------------------------------------------------- loop


def lr_at(step: int, args: argparse.Namespace) -> float:
    warm = min(1.0, (step + 1) / 100)
    t = min(1.0, step / max(1, args.steps))
    return warm * (args.lr_min + 0.5 * (args.lr - args.lr_min) * (1 + math.cos(math.pi * t)))


def write_grid(path: Path, G: Generator, enc: Encoder, target: torch.Tensor, opt_steps: int = 30) -> None:
    """Rows: target | encoder | encoder + ``opt_steps`` projection steps."""
    from server.engine.project import ProjectOptions, ProjectSession

    enc.eval()
    with torch.no_grad():
        w_hat = enc(target)
        rec = synth(G, w_hat)
    enc.train()
    tgt_u8, rec_u8 = to_uint8(target), to_uint8(rec)
    frames = []
    opts = ProjectOptions(max_steps=opt_steps, min_steps=opt_steps)
    for i in range(len(target)):
        s = ProjectSession(G, tgt_u8[i], w_hat[i : i + 1], opts)
        while not s.done:
            s.step()
        frames += [tgt_u8[i], rec_u8[i], s.render()]
    Image.fromarray(upscale(make_grid(frames, cols=3, pad=2), 2)).save(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "train.log"
    ckpt_path = out / "ckpt.pt"

    def log(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        tqdm.write(line)
        with open(log_path, "a") as f:
            f.write(line + "\n")

    G = load_generator(args.checkpoint, device=dev).eval().requires_grad_(False)
    perceptual = PerceptualDistance().to(dev)
    enc = Encoder(EncoderConfig.for_generator(G)).to(dev)
    opt = torch.optim.Adam(enc.parameters(), lr=args.lr, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(args.seed)
    held_gen = torch.Generator().manual_seed(10**6 + args.seed)  # never used for training samples

    w_avg, w_std = latent_stats(G, 10000, torch.Generator().manual_seed(12345))
    held_w = sample_wplus(G, args.held_out, held_gen, w_std, args)
    held_img = synth(G, held_w)
    step = 0
    if ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        enc.load_state_dict(ck["encoder"])
        opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen"])
        step = int(ck["step"])
        pool_w, pool_img = ck["pool_w"].to(dev), ck["pool_img"].to(dev).float()
        log(f"resumed from {ckpt_path} at step {step}")
    else:
        enc.set_latent_stats(w_avg, w_std)
        t0 = time.time()
        pool_w = sample_wplus(G, args.pool, gen, w_std, args)
        pool_img = synth(G, pool_w)
        log(
            f"start: encoder {enc.num_parameters() / 1e6:.2f} M parameters; pool of {args.pool} "
            f"generated in {time.time() - t0:.0f} s; args {json.dumps(vars(args))}"
        )

    def save_ckpt() -> None:
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(
            {
                "encoder": enc.state_dict(),
                "opt": opt.state_dict(),
                "gen": gen.get_state(),
                "step": step,
                "pool_w": pool_w.cpu(),
                "pool_img": pool_img.half().cpu(),
            },
            tmp,
        )
        tmp.replace(ckpt_path)

    @torch.no_grad()
    def held_out_psnr() -> float:
        enc.eval()
        rec = synth(G, enc(held_img))
        enc.train()
        return float(psnr(rec, held_img).mean())

    t_start = time.time()
    enc.train()
    bar = tqdm(total=args.steps, initial=step, desc="encoder", disable=args.no_progress, dynamic_ncols=True)
    run = {"latent": 0.0, "image": 0.0, "n": 0}
    stop_reason = "done"
    while step < args.steps:
        if args.minutes and time.time() - t_start > args.minutes * 60:
            stop_reason = f"chunk of {args.minutes} min over"
            break
        # refresh part of the pool
        if args.refresh > 0:
            idx = torch.randint(0, args.pool, (args.refresh,), generator=gen).to(dev)
            new_w = sample_wplus(G, args.refresh, gen, w_std, args)
            pool_w[idx] = new_w
            pool_img[idx] = synth(G, new_w)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        idx = torch.randint(0, args.pool, (args.batch,), generator=gen).to(dev)
        w, img = pool_w[idx], pool_img[idx]
        off = enc.offsets(img)
        target_off = (w - enc.w_avg) / enc.w_std
        latent_loss = (off - target_off).square().mean()
        loss = args.latent_weight * latent_loss
        image_loss = torch.zeros(())
        if step >= args.image_after and args.image_batch > 0:
            k = min(args.image_batch, args.batch)
            w_hat = enc.w_avg + enc.w_std * off[:k]
            rec, _ = G.synthesis(w_hat, noise_mode="const")
            tgt = img[:k]
            image_loss = (
                args.l1_weight * (rec - tgt).abs().mean()
                + args.mse_weight * (rec - tgt).square().mean()
                + args.perceptual_weight * perceptual(rec, tgt).mean()
            )
            loss = loss + image_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(enc.parameters(), 10.0)
        opt.step()
        step += 1
        bar.update(1)
        run["latent"] += float(latent_loss.detach())
        run["image"] += float(image_loss.detach())
        run["n"] += 1
        if step % args.log_every == 0:
            n = max(1, run["n"])
            log(
                f"step {step} lr {lr_at(step, args):.2e} latent {run['latent'] / n:.4f} "
                f"image {run['image'] / n:.4f} held-out PSNR {held_out_psnr():.2f} dB"
            )
            run = {"latent": 0.0, "image": 0.0, "n": 0}
        if step % args.ckpt_every == 0:
            save_ckpt()
        if step % args.grid_every == 0:
            write_grid(out / f"grid_{step:06d}.png", G, enc, held_img[:6])
    bar.close()
    save_ckpt()
    final_psnr = held_out_psnr()
    log(f"stopped at step {step} ({stop_reason}); held-out PSNR {final_psnr:.2f} dB; checkpoint {ckpt_path}")
    write_grid(out / f"grid_{step:06d}.png", G, enc, held_img[:6])
    if args.export:
        training = {
            "script": "scripts/train_encoder.py",
            "steps": step,
            "held_out_psnr_db": round(final_psnr, 2),
            "args": {k: v for k, v in vars(args).items() if k not in ("export", "out")},
        }
        path = save_encoder(args.export, enc.eval(), G, training)
        log(f"exported {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
