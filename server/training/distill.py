"""Distil the SynthFaces renderer into a StyleGAN2 generator: regression instead of a GAN game.

The renderer draws the exact image for every latent: ``z`` [N_SLOTS] names a face through
``server.synthfaces.params_from_z`` (the uniforms of the sampler, read through the normalised
z that the mapping network sees). So the generator is trained like a student network:

  1. Draw z ~ N(0, I) (a seeded numpy stream, resumable) and render each face at ``res``.
  2. With probability ``mix_prob`` mix two faces: W+ rows ``< mix_cut`` from face A and the rest
     from face B, and the target is the render of A's geometry with B's colours and light
     (``mix_params``). DragGAN optimises the first six rows, so with ``mix_cut`` 6 a drag moves
     geometry without repainting the face, and W+ stays meaningful off the sampled latents.
  3. Loss = L1 on pixels + ``edge_weight`` * L1 on Sobel gradients (crisp outlines: a blurred
     edge costs more) + ``perceptual_weight`` * the project's LPIPS-like distance on the landmark
     detector's features (server/engine/perceptual.py) + ``aux_weight`` * a linear read-out of the
     face's parameters from w (see 4) + ``flat_weight`` * L1 on Sobel gradients where the render
     is flat (its gradient under ``flat_tau``: ripples and halos a regression leaves in flat
     areas, too faint to matter to the all-pixel terms) + ``adv_weight`` * a light adversarial
     term (distill_adv.py). Adam, G_ema for the shipped weights.
  4. Before the first step the mapping network is taught alone (``pretrain_steps``, no rendering,
     seconds) to make w carry the face's parameters linearly: colours as RGB, pose, shapes, hair
     style, glasses, all standardised, read by one linear layer. The synthesis network's affine
     layers are linear in w, so colours and shapes reach the styles from the first step instead
     of being discovered through the image loss; the read-out stays in the loss afterwards.

The run directory holds checkpoint.pt (everything to continue bit for bit), log.jsonl (losses
and the held-out PSNR of G_ema against the renders of seeds 10,000,000+), grids/ (G_ema on
seeds 0-15 above the renders of the same seeds) and snapshots/*.safetensors.
"""

from __future__ import annotations

import copy
import json
import math
import threading
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from server.engine.checkpoint import save_generator
from server.engine.generator import Generator, GeneratorConfig, to_uint8
from server.synthfaces import N_SLOTS
from server.synthfaces.params import z_from_seed as face_z_from_seed

from .chunks import run_chunk, save_atomically
from .distill_data import AttributeReadout, Renderer, as_tensor, psnr, render_targets, sobel
from .loop import _device_name, save_image_grid

CHECKPOINT_FORMAT = "livedrag.distill"
CHECKPOINT_NAME = "checkpoint.pt"
LATENT_KIND = "synthfaces.params_from_z"  # GeneratorConfig.extra["latent"]: z names a render
HELD_OUT_SEED = 10_000_000  # evaluation seeds (never drawn by the training stream's RNG)


@dataclass(frozen=True)
class DistillConfig:
    # -- network
    res: int = 128  # image resolution
    channel_base: int = 2048  # channels at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 128
    w_dim: int = 256
    mapping_layers: int = 4
    mapping_lr_multiplier: float = (
        0.1  # the mapping must learn the renderer's parameters: faster than a GAN's 0.01
    )
    # -- optimisation
    batch: int = 16
    lr: float = 0.002
    betas: tuple[float, float] = (0.9, 0.99)
    lr_final: float = 0.2  # cosine decay of the learning rate to lr * lr_final at total_kimg
    total_kimg: float = 1000.0
    ema_kimg: float = 2.0  # G_ema half-life in thousands of images (ramped over the first kimg)
    # -- loss
    edge_weight: float = 1.0  # L1 on Sobel gradients
    perceptual_weight: float = 0.5  # LPIPS-like distance on the landmark detector's features
    aux_weight: float = 0.1  # MSE of the linear read-out of the face's parameters from w
    adv_weight: float = 0.0  # light adversarial term (distill_adv.Critic); 0 = regression only
    flat_weight: float = 0.0  # L1 on Sobel gradients where the render is flat (ripples, halos)
    flat_tau: float = 0.02  # "flat": the render's Sobel response under this (about 2.5 grey levels/px)
    flat_margin: int = 0  # px: responses this close to a non-flat one do not count as flat (edges' rims)
    pretrain_steps: int = 1500  # mapping-only steps (batch 256) that teach w the parameters first
    mix_prob: float = 0.5  # share of batches with two faces mixed at mix_cut
    mix_cut: int = 6  # W+ rows from face A (geometry); the rest from face B (colours, light)
    # -- bookkeeping
    seed: int = 0
    log_kimg: float = 1.0
    grid_kimg: float = 10.0
    snap_kimg: float = 25.0
    ckpt_kimg: float = 5.0

    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig(
            z_dim=N_SLOTS,
            w_dim=self.w_dim,
            img_resolution=self.res,
            channel_base=self.channel_base,
            channel_max=self.channel_max,
            mapping_layers=self.mapping_layers,
            mapping_lr_multiplier=self.mapping_lr_multiplier,
            name=f"synthfaces-{self.res}",
            extra={"latent": LATENT_KIND, "mix_cut": self.mix_cut},
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DistillConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown DistillConfig fields: {unknown}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)


# The loss's settings, recorded with every chunk of a run (they may change between chunks).
LOSS_WEIGHTS = (
    "edge_weight",
    "perceptual_weight",
    "aux_weight",
    "mix_prob",
    "adv_weight",
    "flat_weight",
    "flat_margin",
)
# Settings that may change when a run resumes (everything else must match the checkpoint): the
# schedule's end, the bookkeeping, and the loss weights (a later phase may stress edges more).
RESUMABLE_OVERRIDES = ("total_kimg", "log_kimg", "grid_kimg", "snap_kimg", "ckpt_kimg", *LOSS_WEIGHTS)


def flat_loss(g_img: torch.Tensor, g_tgt: torch.Tensor, tau: float, margin: int = 0) -> torch.Tensor:
    """Mean |Sobel(generated) - Sobel(render)| over the responses where the render is flat
    (|response| < ``tau``), so ripples in flat areas count as much as the areas are large. With
    ``margin`` > 0, pixels within that many px of a non-flat response (in any channel) are left
    out: the rim of an edge, which a slightly soft or shifted edge leaks into, is the edge term's,
    and penalising it there blurs edges."""
    flat = g_tgt.abs() < tau
    if margin > 0:
        edge = (~flat).any(dim=1, keepdim=True).to(g_img.dtype)
        near = F.max_pool2d(edge, 2 * margin + 1, stride=1, padding=margin) > 0
        flat = flat & ~near
    mask = flat.to(g_img.dtype)
    return ((g_img - g_tgt).abs() * mask).sum() / mask.sum().clamp_min(1.0)


class DistillTrainer:
    """G, G_ema, Adam and the latent stream; ``run`` trains, logs, checkpoints."""

    def __init__(
        self,
        cfg: DistillConfig,
        run_dir: str | Path,
        device: str | torch.device = "cpu",
        render_workers: int = 0,
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        self.renderer = Renderer(cfg.res, render_workers)  # forks before CUDA starts in this process
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(cfg.seed)
        self.G = Generator(cfg.generator_config()).to(self.device).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.readout = AttributeReadout(cfg.w_dim, cfg.seed).to(self.device)
        params = list(self.G.parameters()) + list(self.readout.parameters())
        self.opt = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=1e-8)
        self.pretrained = False
        self.critic = self._make_critic() if cfg.adv_weight > 0 else None
        self.perceptual = None
        if cfg.perceptual_weight > 0:
            from server.engine.perceptual import PerceptualDistance

            self.perceptual = PerceptualDistance().to(self.device)
        self.rng = np.random.default_rng(cfg.seed)
        self._next = None  # the batch being rendered ahead: (rng state before it, za, zb, handle)
        self.step = 0
        self.nimg = 0
        self.train_s = 0.0
        self.chunks: list[dict] = []
        self._stop = threading.Event()
        self._eval_z = np.stack([face_z_from_seed(HELD_OUT_SEED + i) for i in range(64)])
        self._eval_target: torch.Tensor | None = None

    def _make_critic(self):
        from .distill_adv import Critic

        c = self.cfg
        return Critic(c.res, c.channel_base, c.channel_max, c.batch, self.device)

    # -- one iteration ---------------------------------------------------------------------------
    def lr_now(self) -> float:
        t = min(self.nimg / max(self.cfg.total_kimg * 1000, 1), 1.0)
        return self.cfg.lr * (self.cfg.lr_final + (1 - self.cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * t)))

    def _draw(self):
        """Draw the next batch's latents and start rendering it (in the background with workers)."""
        state = self.rng.bit_generator.state
        n = self.cfg.batch
        za = self.rng.standard_normal((n, N_SLOTS))
        zb = self.rng.standard_normal((n, N_SLOTS)) if self.rng.random() < self.cfg.mix_prob else None
        return state, za, zb, self.renderer.submit(za, zb)

    def train_step(self) -> dict[str, float]:
        cfg, n = self.cfg, self.cfg.batch
        if self._next is None:
            self._next = self._draw()
        _, za, zb, handle = self._next
        target = as_tensor(handle.result()).to(self.device)
        self._next = self._draw()  # renders while this step trains
        mixed = zb is not None
        ws = self.G.mapping(torch.from_numpy(za).float().to(self.device))
        if mixed:
            wb = self.G.mapping(torch.from_numpy(zb).float().to(self.device))
            ws = torch.cat([ws[:, : cfg.mix_cut], wb[:, cfg.mix_cut :]], dim=1)
        img, _ = self.G.synthesis(ws, noise_mode="const")  # [N, 3, res, res]
        l1 = (img - target).abs().mean()
        g_img, g_tgt = sobel(img), sobel(target)
        edge = (g_img - g_tgt).abs().mean() if cfg.edge_weight > 0 else img.new_zeros(())
        flat = img.new_zeros(())
        if cfg.flat_weight > 0:
            flat = flat_loss(g_img, g_tgt, cfg.flat_tau, cfg.flat_margin)
        perc = self.perceptual(img, target).mean() if self.perceptual is not None else img.new_zeros(())
        aux = self.readout.loss(ws[:, 0], za) if cfg.aux_weight > 0 else img.new_zeros(())
        loss = l1 + cfg.edge_weight * edge + cfg.perceptual_weight * perc + cfg.aux_weight * aux
        loss = loss + cfg.flat_weight * flat
        adv = self.critic.g_loss(img) if self.critic is not None else img.new_zeros(())
        loss = loss + cfg.adv_weight * adv
        for g in self.opt.param_groups:
            g["lr"] = self.lr_now()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        d_stats = self.critic.d_step(img.detach(), target) if self.critic is not None else {}
        self.step += 1
        self.nimg += n
        self.update_ema()
        with torch.no_grad():
            p = psnr(img, target).mean()
        return {
            "loss": loss.item(),
            "l1": l1.item(),
            "edge": edge.item(),
            "flat": flat.item(),
            "perc": perc.item(),
            "aux": aux.item(),
            "adv": adv.item(),
            **d_stats,
            "psnr": float(p),
        }

    def pretrain_mapping(self, progress: bool = True) -> None:
        """Teach the mapping network to carry the face's parameters (no rendering, seconds)."""
        cfg = self.cfg
        if cfg.pretrain_steps > 0:
            rng = np.random.default_rng(cfg.seed + 104729)
            opt = torch.optim.Adam(
                list(self.G.mapping.parameters()) + list(self.readout.parameters()),
                lr=cfg.lr,
                betas=cfg.betas,
            )
            bar = tqdm(range(cfg.pretrain_steps), desc="mapping pre-training", disable=not progress)
            for i in bar:
                z = rng.standard_normal((256, N_SLOTS))
                loss = self.readout.loss(self.G.mapping(torch.from_numpy(z).float().to(self.device))[:, 0], z)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if i % 100 == 0 or i == cfg.pretrain_steps - 1:
                    bar.set_postfix_str(f"read-out MSE {loss.item():.4f}", refresh=False)
            self._log({"pretrain_steps": cfg.pretrain_steps, "readout_mse": round(loss.item(), 5)})
            with torch.no_grad():
                for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
                    p_ema.copy_(p)
        self.pretrained = True

    @torch.no_grad()
    def update_ema(self) -> None:
        ema_nimg = min(self.cfg.ema_kimg * 1000, self.nimg * 0.05 + 1)
        beta = 0.5 ** (self.cfg.batch / max(ema_nimg, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
            p_ema.lerp_(p, 1 - beta)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
            b_ema.copy_(b)

    # -- outputs -----------------------------------------------------------------------------------
    @property
    def kimg(self) -> float:
        return self.nimg / 1000

    @torch.no_grad()
    def held_out_psnr(self) -> float:
        """Mean PSNR of G_ema against the renders of 64 held-out seeds (psi 1)."""
        if self._eval_target is None:
            self._eval_target = render_targets(self._eval_z, self.cfg.res)
        z = torch.from_numpy(self._eval_z).float().to(self.device)
        img = torch.cat([self.G_ema(z[i : i + 16], noise_mode="const") for i in range(0, 64, 16)])
        return float(psnr(img.cpu(), self._eval_target).mean())

    @torch.no_grad()
    def sample_grid(self, path: str | Path | None = None) -> Path:
        """G_ema on seeds 0-15 (rows 1-2) above the renders of the same seeds (rows 3-4)."""
        z = np.stack([face_z_from_seed(s) for s in range(16)])
        fake = to_uint8(self.G_ema(torch.from_numpy(z).float().to(self.device), noise_mode="const"))
        real = to_uint8(render_targets(z, self.cfg.res))
        path = path or self.run_dir / "grids" / f"grid_{int(self.kimg):06d}.png"
        return save_image_grid(np.concatenate([fake, real]), path, cols=8)

    def provenance(self) -> dict:
        return {
            "kimg": round(self.kimg, 3),
            "step": self.step,
            "seed": self.cfg.seed,
            "distill_config": self.cfg.to_dict(),
            "latent": "z [N_SLOTS] names the face server.synthfaces.params_from_z(z)",
            "compute": {"train_hours": round(self.train_s / 3600, 4), "chunks": self.chunks},
            "trained_with": "scripts/train_distill.py",
        }

    def save_snapshot(self, path: str | Path | None = None) -> Path:
        """G_ema as an fp16 livedrag generator checkpoint with provenance metadata."""
        path = path or self.run_dir / "snapshots" / f"g_ema_{int(self.kimg):06d}.safetensors"
        return save_generator(self.G_ema, path, half=True, extra_meta=self.provenance())

    # -- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": 1,
            "config": self.cfg.to_dict(),
            "G": self.G.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "readout": self.readout.state_dict(),
            "critic": self.critic.state_dict() if self.critic is not None else None,
            "pretrained": self.pretrained,
            "opt": self.opt.state_dict(),
            "step": self.step,
            "nimg": self.nimg,
            "train_s": self.train_s,
            "chunks": self.chunks,
            "torch_rng": torch.get_rng_state(),
            # the stream as it was before the batch rendered ahead, so a resumed run draws it again
            "rng": json.dumps(self._next[0] if self._next is not None else self.rng.bit_generator.state),
        }

    def load_state_dict(self, ckpt: dict) -> None:
        fixed = [k for k in ckpt["config"] if k not in RESUMABLE_OVERRIDES]
        mine = self.cfg.to_dict()
        diff = [k for k in fixed if ckpt["config"][k] != mine.get(k)]
        if diff:
            raise ValueError(f"checkpoint was made with a different distillation config: {diff}")
        self.G.load_state_dict(ckpt["G"])
        self.G_ema.load_state_dict(ckpt["G_ema"])
        self.readout.load_state_dict(ckpt["readout"])
        if self.critic is not None and ckpt.get("critic") is not None:
            self.critic.load_state_dict(ckpt["critic"])  # else: a critic joins a run fresh
        self.pretrained = bool(ckpt["pretrained"])
        self.opt.load_state_dict(ckpt["opt"])
        self.step, self.nimg, self.train_s = ckpt["step"], ckpt["nimg"], ckpt["train_s"]
        self.chunks = list(ckpt["chunks"])
        torch.set_rng_state(ckpt["torch_rng"])
        self.rng.bit_generator.state = json.loads(ckpt["rng"])
        self._next = None

    def save_checkpoint(self) -> Path:
        """Everything needed to continue the run bit for bit, written atomically."""
        return save_atomically(self.state_dict(), self.run_dir / CHECKPOINT_NAME)

    @classmethod
    def resume(
        cls,
        run_dir: str | Path,
        device: str | torch.device = "cpu",
        overrides: dict | None = None,
        render_workers: int = 0,
    ) -> DistillTrainer:
        """Rebuild a trainer from ``run_dir/checkpoint.pt``; ``overrides`` may change RESUMABLE_OVERRIDES."""
        ckpt = torch.load(Path(run_dir) / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{run_dir}/{CHECKPOINT_NAME} is not a livedrag distillation checkpoint")
        bad = sorted(set(overrides or {}) - set(RESUMABLE_OVERRIDES))
        if bad:
            raise ValueError(f"cannot change {bad} when resuming (only {list(RESUMABLE_OVERRIDES)})")
        cfg = replace(DistillConfig.from_dict(ckpt["config"]), **(overrides or {}))
        ckpt["config"].update(overrides or {})
        trainer = cls(cfg, run_dir, device, render_workers)
        trainer.load_state_dict(ckpt)
        return trainer

    # -- the loop ----------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Finish the current step, checkpoint and return from ``run`` (safe from a signal handler)."""
        self._stop.set()

    def _log(self, record: dict) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def run(
        self,
        minutes: float | None = None,
        max_steps: int | None = None,
        progress: bool = True,
        stop_kimg: float | None = None,
    ) -> str:
        """Train until ``total_kimg``, ``minutes`` of wall time, ``max_steps``, ``stop_kimg`` or a
        stop request; always checkpoint at the end. Returns "done", "time", "steps", "kimg" or
        "stopped"."""
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "distill_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        if not self.pretrained:
            self.pretrain_mapping(progress)
        if self.step == 0:
            self.sample_grid()
        chunk = {
            "device": str(self.device),
            "device_name": _device_name(self.device),
            "threads": torch.get_num_threads(),
            "start_kimg": round(self.kimg, 3),
            "seconds": 0.0,
            "loss_weights": {k: getattr(cfg, k) for k in LOSS_WEIGHTS},
        }
        self.chunks.append(chunk)
        acc: dict[str, list[float]] = {}
        t_log, nimg_log = time.perf_counter(), self.nimg

        def after_step(stats: dict[str, float], bar, crossed) -> None:
            nonlocal t_log, nimg_log
            for k, v in stats.items():
                acc.setdefault(k, []).append(v)
            if crossed(cfg.log_kimg):
                now = time.perf_counter()
                means = {k: round(float(np.mean(v)), 5) for k, v in acc.items()}
                rec = {
                    "kimg": round(self.kimg, 3),
                    "step": self.step,
                    "sec_per_kimg": round((now - t_log) / max((self.nimg - nimg_log) / 1000, 1e-9), 3),
                    "train_hours": round(self.train_s / 3600, 4),
                    "lr": round(self.lr_now(), 6),
                    **means,
                }
                if crossed(cfg.grid_kimg) or crossed(cfg.snap_kimg):
                    rec["held_out_psnr"] = round(self.held_out_psnr(), 3)
                self._log(rec)
                bar.set_postfix_str(f"L1 {means['l1']:.4f} PSNR {means['psnr']:.2f} dB", refresh=False)
                acc.clear()
                t_log, nimg_log = time.perf_counter(), self.nimg
            if crossed(cfg.grid_kimg):
                self.sample_grid()
            if crossed(cfg.snap_kimg):
                self.save_snapshot()
            if crossed(cfg.ckpt_kimg):
                self.save_checkpoint()

        return run_chunk(self, chunk, cfg.total_kimg, minutes, max_steps, progress, after_step, stop_kimg)
