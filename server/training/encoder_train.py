"""Train the image -> W+ encoder (server/engine/encoder.py) on images of its own generator.

Data are generated only: W+ latents are sampled (mapping of random z, a random truncation psi in
[psi_min, 1], style mixing between two w at a random crossover row so W+ rows differ, and a small
Gaussian perturbation in units of the W std) and synthesised with the frozen generator
(noise_mode const). To spend the compute on the encoder rather than on the generator, samples live
in a pool that is refreshed a few items per step.

Losses: the latent MSE in units of the per-dimension W std, plus (from ``image_after`` steps on)
an image loss on a sub-batch: the encoder's latent is synthesised (generator frozen, gradients
flow through it) and compared with the target by pixel L1 + MSE and the perceptual distance of
server/engine/perceptual.py.

Every ``log_every`` steps: a log line with the losses and the PSNR of encoder reconstructions of a
fixed held-out batch; every ``grid_every`` steps and at the end (``grids``): a PNG grid whose
rows are target | encoder | encoder + 30 optimisation steps. Resumable: ``OUT/ckpt.pt`` (tensors
and plain containers, loaded with weights_only=True) is written every ``ckpt_every`` steps and at
the end; running again continues. ``scripts/train_encoder.py`` is the command line.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

from server.engine.encoder import Encoder, EncoderConfig, EncoderError, load_encoder, save_encoder
from server.engine.generator import Generator, to_uint8
from server.engine.media import make_grid, upscale
from server.engine.perceptual import PerceptualDistance


@dataclass(frozen=True)
class EncoderTrainConfig:
    """Settings of one encoder run (the flags of scripts/train_encoder.py)."""

    out: Path = Path("runs/encoder")  # run folder: checkpoint, log, grids
    steps: int = 3000  # total optimiser steps (sets the lr schedule)
    minutes: float = 0.0  # stop this chunk after this long (0: no limit)
    batch: int = 32  # latent-loss batch
    image_batch: int = 8  # image-loss sub-batch
    image_after: int = 1000  # add the image loss from this step on
    pool: int = 2048  # generated samples kept in memory
    refresh: int = 8  # pool samples replaced per step
    lr: float = 1e-3
    lr_min: float = 5e-5  # cosine schedule floor
    latent_weight: float = 1.0
    l1_weight: float = 1.0
    mse_weight: float = 1.0
    perceptual_weight: float = 1.0
    psi_min: float = 0.5
    mix_prob: float = 0.9
    perturb: float = 0.1  # max Gaussian perturbation (units of W std)
    seed: int = 0
    held_out: int = 32
    log_every: int = 50
    grid_every: int = 500  # 0: no grids during training
    ckpt_every: int = 100
    grids: bool = True  # write the PNG grids (each costs 30 projection steps per row)
    channels: tuple[int, ...] | None = None  # encoder stages (None: EncoderConfig's default)
    feat_dim: int | None = None  # image feature size (None: EncoderConfig's default)
    row_dim: int | None = None  # per-row head size (None: EncoderConfig's default)
    # warm start: an encoder file (.safetensors) or another run's ckpt.pt whose weights start this
    # run (the same architecture; its generator may differ, e.g. a later snapshot of it)
    init: Path | None = None

    @classmethod
    def from_namespace(cls, ns: Any) -> EncoderTrainConfig:
        d = {f.name: getattr(ns, f.name) for f in fields(cls) if hasattr(ns, f.name)}
        if d.get("channels") is not None:
            d["channels"] = tuple(d["channels"])
        return cls(**d)

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    def __post_init__(self) -> None:
        if self.init is not None and not isinstance(self.init, Path):
            object.__setattr__(self, "init", Path(self.init))

    def encoder_config(self, G: Generator) -> EncoderConfig:
        kw = {
            k: getattr(self, k) for k in ("channels", "feat_dim", "row_dim") if getattr(self, k) is not None
        }
        return EncoderConfig.for_generator(G, **kw)


# -- data ------------------------------------------------------------------------------------------


@torch.no_grad()
def latent_stats(G: Generator, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and per-dimension std of W under the mapping (psi = 1)."""
    dev = G.mapping.w_avg.device
    z = torch.randn(n, G.z_dim, generator=gen).to(dev)
    w = G.mapping(z)[:, 0]
    return G.mapping.w_avg.clone(), w.std(0)


@torch.no_grad()
def sample_wplus(G: Generator, n: int, gen: torch.Generator, w_std: torch.Tensor, cfg: Any) -> torch.Tensor:
    """W+ [n, num_ws, w_dim]: truncated, style-mixed, perturbed mapping outputs (``cfg`` gives
    psi_min, mix_prob and perturb)."""
    dev = G.mapping.w_avg.device
    z = torch.randn(2 * n, G.z_dim, generator=gen).to(dev)
    w = G.mapping(z)  # [2n, num_ws, w_dim], rows identical
    psi = (cfg.psi_min + (1 - cfg.psi_min) * torch.rand(2 * n, 1, 1, generator=gen)).to(dev)
    w = G.mapping.w_avg + psi * (w - G.mapping.w_avg)
    wa, wb = w[:n], w[n:]
    cut = torch.randint(1, G.num_ws, (n,), generator=gen).to(dev)
    mix = (torch.rand(n, generator=gen) < cfg.mix_prob).to(dev)
    rows = torch.arange(G.num_ws, device=dev)[None]
    use_b = (rows >= cut[:, None]) & mix[:, None]
    w = torch.where(use_b[..., None], wb, wa)
    sigma = (cfg.perturb * torch.rand(n, 1, 1, generator=gen)).to(dev)
    noise = torch.randn(w.shape, generator=gen).to(dev)
    return w + sigma * noise * w_std


@torch.no_grad()
def synth(G: Generator, w: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    return torch.cat([G.synthesis(w[i : i + chunk], noise_mode="const")[0] for i in range(0, len(w), chunk)])


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = (a.clamp(-1, 1) - b.clamp(-1, 1)).square().flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-10))


def lr_at(step: int, cfg: EncoderTrainConfig) -> float:
    warm = min(1.0, (step + 1) / 100)
    t = min(1.0, step / max(1, cfg.steps))
    return warm * (cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * t)))


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


# -- the loop --------------------------------------------------------------------------------------


def warm_start(enc: Encoder, path: Path, G: Generator) -> None:
    """Load the weights of an encoder file or of another run's ``ckpt.pt`` into ``enc``.

    For fine-tuning an encoder to a generator that changed a little (a later snapshot, a
    fine-tuned copy): the architecture must be the same, the generator's weights need not be.
    """
    path = Path(path)
    if not path.is_file():
        raise EncoderError(f"--init: no such file: {path}")
    if path.suffix == ".safetensors":
        state = load_encoder(path, G, device="cpu", allow_other_weights=True).state_dict()
    else:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ck, dict) or "encoder" not in ck:
            raise EncoderError(f"--init: {path} is neither an encoder file nor an encoder run's ckpt.pt")
        state = ck["encoder"]
    try:
        enc.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise EncoderError(f"--init: {path} has another encoder architecture: {first}") from None


def train_encoder(
    G: Generator,
    cfg: EncoderTrainConfig,
    device: torch.device | str = "cpu",
    export: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Train (or continue) the run in ``cfg.out``; with ``export``, write the encoder file there at
    the end. Returns steps, steps run now, seconds, steps/s and the held-out PSNR."""
    dev = torch.device(device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "train.log"
    ckpt_path = out / "ckpt.pt"

    def log(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        tqdm.write(line)
        with open(log_path, "a") as f:
            f.write(line + "\n")

    G = G.eval().requires_grad_(False)
    perceptual = PerceptualDistance().to(dev)
    enc = Encoder(cfg.encoder_config(G)).to(dev)
    opt = torch.optim.Adam(enc.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(cfg.seed)
    held_gen = torch.Generator().manual_seed(10**6 + cfg.seed)  # never used for training samples

    w_avg, w_std = latent_stats(G, 10000, torch.Generator().manual_seed(12345))
    held_w = sample_wplus(G, cfg.held_out, held_gen, w_std, cfg)
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
        if cfg.init is not None:
            warm_start(enc, cfg.init, G)
            log(f"warm start from {cfg.init}")
        enc.set_latent_stats(w_avg, w_std)  # this generator's, whatever the warm start had
        t0 = time.time()
        pool_w = sample_wplus(G, cfg.pool, gen, w_std, cfg)
        pool_img = synth(G, pool_w)
        log(
            f"start: encoder {enc.num_parameters() / 1e6:.2f} M parameters; pool of {cfg.pool} "
            f"generated in {time.time() - t0:.0f} s; config {json.dumps(cfg.to_dict())}"
        )

    def save_ckpt() -> None:
        from .chunks import save_atomically

        state = {
            "encoder": enc.state_dict(),
            "opt": opt.state_dict(),
            "gen": gen.get_state(),
            "step": step,
            "pool_w": pool_w.cpu(),
            "pool_img": pool_img.half().cpu(),
        }
        save_atomically(state, ckpt_path)

    @torch.no_grad()
    def held_out_psnr() -> float:
        enc.eval()
        rec = synth(G, enc(held_img))
        enc.train()
        return float(psnr(rec, held_img).mean())

    t_start = time.time()
    t_run = time.perf_counter()
    first = step
    enc.train()
    bar = tqdm(total=cfg.steps, initial=step, desc="encoder", disable=not progress, dynamic_ncols=True)
    run = {"latent": 0.0, "image": 0.0, "n": 0}
    stop_reason = "done"
    while step < cfg.steps:
        if cfg.minutes and time.time() - t_start > cfg.minutes * 60:
            stop_reason = f"chunk of {cfg.minutes} min over"
            break
        if cfg.refresh > 0:  # refresh part of the pool
            idx = torch.randint(0, cfg.pool, (cfg.refresh,), generator=gen).to(dev)
            new_w = sample_wplus(G, cfg.refresh, gen, w_std, cfg)
            pool_w[idx] = new_w
            pool_img[idx] = synth(G, new_w)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        idx = torch.randint(0, cfg.pool, (cfg.batch,), generator=gen).to(dev)
        w, img = pool_w[idx], pool_img[idx]
        off = enc.offsets(img)
        target_off = (w - enc.w_avg) / enc.w_std
        latent_loss = (off - target_off).square().mean()
        loss = cfg.latent_weight * latent_loss
        image_loss = torch.zeros(())
        if step >= cfg.image_after and cfg.image_batch > 0:
            k = min(cfg.image_batch, cfg.batch)
            w_hat = enc.w_avg + enc.w_std * off[:k]
            rec, _ = G.synthesis(w_hat, noise_mode="const")
            tgt = img[:k]
            image_loss = (
                cfg.l1_weight * (rec - tgt).abs().mean()
                + cfg.mse_weight * (rec - tgt).square().mean()
                + cfg.perceptual_weight * perceptual(rec, tgt).mean()
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
        if step % cfg.log_every == 0:
            n = max(1, run["n"])
            log(
                f"step {step} lr {lr_at(step, cfg):.2e} latent {run['latent'] / n:.4f} "
                f"image {run['image'] / n:.4f} held-out PSNR {held_out_psnr():.2f} dB"
            )
            run = {"latent": 0.0, "image": 0.0, "n": 0}
        if step % cfg.ckpt_every == 0:
            save_ckpt()
        if cfg.grids and cfg.grid_every > 0 and step % cfg.grid_every == 0:
            write_grid(out / f"grid_{step:06d}.png", G, enc, held_img[:6])
    bar.close()
    seconds = time.perf_counter() - t_run
    save_ckpt()
    final_psnr = held_out_psnr()
    log(f"stopped at step {step} ({stop_reason}); held-out PSNR {final_psnr:.2f} dB; checkpoint {ckpt_path}")
    if cfg.grids:
        write_grid(out / f"grid_{step:06d}.png", G, enc, held_img[:6])
    if export:
        training = {
            "script": "scripts/train_encoder.py",
            "steps": step,
            "held_out_psnr_db": round(final_psnr, 2),
            "args": {k: v for k, v in cfg.to_dict().items() if k != "out"},
        }
        path = save_encoder(export, enc.eval(), G, training)
        log(f"exported {path} ({path.stat().st_size / 1e6:.2f} MB)")
    ran = step - first
    return {
        "steps": step,
        "steps_run": ran,
        "seconds": seconds,
        "steps_per_s": ran / seconds if ran and seconds > 0 else None,
        "held_out_psnr_db": final_psnr,
        "stop_reason": stop_reason,
    }
