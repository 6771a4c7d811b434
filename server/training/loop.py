"""The StyleGAN2 training loop: one code path for the CPU and CUDA.

Per iteration (NVIDIA stylegan2-ada-pytorch's phases, one generator pass shared by D and G):
  1. G renders a batch from z (style mixing with probability 0.9, random noise).
  2. D step on real images and the detached fakes (logistic loss); every ``r1_interval`` steps a
     separate R1 step on the same reals (lazy regularisation, loss times the interval).
  3. G step through the same fakes with D frozen (non-saturating loss); every ``pl_interval``
     steps a path-length step at half batch when ``pl_weight > 0``.
  4. G_ema follows G with a half-life of ``ema_kimg`` (ramped up over the first kimg).
Adam with betas (0, 0.99); where a network has a lazy regulariser its learning rate and betas
are corrected by interval / (interval + 1), as in the StyleGAN2 paper. On CUDA the main passes
run under bfloat16 autocast (the regularisers stay in float32); on the CPU everything is float32.

A run directory holds:
  checkpoint.pt            G, D, G_ema, both optimisers, counters and every RNG state (atomic)
  log.jsonl                one JSON object per ``log_kimg``: losses, logits, sec/kimg
  grids/grid_KKKKKK.png    fixed-seed G_ema samples, top psi 1.0, bottom psi 0.7 (reals.png beside)
  snapshots/g_ema_KKKKKK.safetensors   fp16 G_ema for quality curves (load_generator loads them)
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import platform
import threading
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from server.engine.checkpoint import save_generator
from server.engine.generator import Generator, GeneratorConfig, to_uint8, z_from_seed

from .chunks import run_chunk, save_atomically
from .data import ImageDataset, RenderedDataset, cache_path, render_synthfaces, smooth_random_images
from .discriminator import Discriminator, DiscriminatorConfig
from .loss import PathLengthRegularizer, d_logistic, g_nonsaturating, mapping_with_mixing, r1_penalty

CHECKPOINT_FORMAT = "livedrag.train"
CHECKPOINT_NAME = "checkpoint.pt"


@dataclass(frozen=True)
class TrainConfig:
    # -- networks
    res: int = 64  # image resolution
    channel_base: int = 2048  # G and D channels at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 128
    z_dim: int = 256
    w_dim: int = 256
    mapping_layers: int = 4
    architecture: str = "skip"  # generator output architecture (D is always resnet)
    # -- optimisation
    batch: int = 32
    total_kimg: float = 200.0  # stop after this many thousand real images shown to D
    lr: float = 0.0025  # Adam learning rate of G and D (before lazy-regularisation correction)
    beta2: float = 0.99  # Adam beta2 (beta1 is 0)
    r1_gamma: float | None = None  # R1 weight; None = 0.0002 * res**2 / batch (stylegan2-ada heuristic)
    r1_interval: int = 16  # lazy R1: every this many minibatches
    pl_weight: float = 0.0  # path-length regularisation weight (0 = off; 2 is StyleGAN2's value)
    pl_interval: int = 4  # lazy path-length: every this many minibatches
    pl_batch_shrink: int = 2  # path-length batch = batch // this
    style_mixing_prob: float = 0.9
    ema_kimg: float | None = None  # G_ema half-life in kimg; None = batch * 10 / 32
    ema_rampup: float | None = 0.05  # half-life at most this fraction of the images seen so far
    mbstd_group: int = 4  # minibatch-std group size of D
    noise_mode: str = "random"  # generator noise during training: random, const or none
    amp: bool = True  # bfloat16 autocast for the main passes on CUDA (ignored on the CPU)
    channels_last: bool = False  # channels-last memory format for D (measure before turning on)
    # -- data
    data: str = "synthfaces"  # synthfaces (cached .npy), synthfaces-live (rendered per batch), random
    data_n: int = 100_000  # training images: renderer seeds [0, data_n) (64 px: 1.2 GB cached)
    xflip: bool = False  # random horizontal flips of the reals
    # -- bookkeeping
    seed: int = 0
    log_kimg: float = 1.0  # JSON-lines log interval
    ckpt_kimg: float = 5.0  # checkpoint interval
    snap_kimg: float = 10.0  # G_ema snapshot (safetensors fp16) interval
    grid_kimg: float = 10.0  # sample-grid interval
    grid_size: int = 32  # images per grid half (fixed z seeds 0..grid_size-1)

    def __post_init__(self) -> None:
        if self.batch % min(self.mbstd_group, self.batch):
            raise ValueError(f"batch {self.batch} must be a multiple of mbstd_group {self.mbstd_group}")
        if self.data not in ("synthfaces", "synthfaces-live", "random"):
            raise ValueError(f"data must be synthfaces, synthfaces-live or random, got {self.data!r}")
        if self.noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode must be random, const or none, got {self.noise_mode!r}")

    @property
    def r1_gamma_value(self) -> float:
        return self.r1_gamma if self.r1_gamma is not None else 0.0002 * self.res**2 / self.batch

    @property
    def ema_kimg_value(self) -> float:
        return self.ema_kimg if self.ema_kimg is not None else self.batch * 10 / 32

    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig(
            z_dim=self.z_dim,
            w_dim=self.w_dim,
            img_resolution=self.res,
            architecture=self.architecture,
            channel_base=self.channel_base,
            channel_max=self.channel_max,
            mapping_layers=self.mapping_layers,
            name=f"synthfaces-{self.res}"
            if self.data.startswith("synthfaces")
            else f"{self.data}-{self.res}",
        )

    def discriminator_config(self) -> DiscriminatorConfig:
        return DiscriminatorConfig(
            img_resolution=self.res,
            channel_base=self.channel_base,
            channel_max=self.channel_max,
            mbstd_group_size=self.mbstd_group,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {unknown}")
        return cls(**d)


# Fields a resumed run may change; the rest define the networks, the data or the RNG streams.
RESUMABLE_OVERRIDES = ("total_kimg", "log_kimg", "ckpt_kimg", "snap_kimg", "grid_kimg")


def lazy_adam_params(lr: float, beta2: float, interval: int | None) -> tuple[float, tuple[float, float]]:
    """Learning rate and betas for a network regularised every ``interval`` minibatches (None = never)."""
    if not interval:
        return lr, (0.0, beta2)
    ratio = interval / (interval + 1)
    return lr * ratio, (0.0, beta2**ratio)


def make_dataset(cfg: TrainConfig, data_dir: str | Path, progress: bool = True) -> ImageDataset:
    """The configured training data, rendering the cache file first if it is missing."""
    seed = cfg.seed + 1  # data RNG stream, apart from the torch stream
    if cfg.data == "random":
        return ImageDataset(
            smooth_random_images(cfg.data_n, cfg.res, seed=cfg.seed), seed=seed, xflip=cfg.xflip
        )
    if cfg.data == "synthfaces-live":
        return RenderedDataset(cfg.res, cfg.data_n, seed=seed, xflip=cfg.xflip)
    path = cache_path(data_dir, cfg.res, cfg.data_n)
    if not path.is_file():
        render_synthfaces(path, cfg.res, cfg.data_n, progress=progress)
    return ImageDataset.from_npy(path, seed=seed, xflip=cfg.xflip)


def save_image_grid(images: np.ndarray, path: str | Path, cols: int = 8) -> Path:
    """uint8 [N, H, W, 3] -> one PNG of ``cols`` columns, written atomically."""
    n, h, w, c = images.shape
    rows = math.ceil(n / cols)
    canvas = np.zeros((rows * h, cols * w, c), np.uint8)
    for i, im in enumerate(images):
        r, k = divmod(i, cols)
        canvas[r * h : (r + 1) * h, k * w : (k + 1) * w] = im
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(canvas).save(tmp, format="PNG")
    tmp.replace(path)
    return path


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


class Trainer:
    """Holds G, D, G_ema, the optimisers and the data; ``run`` trains, checkpoints and reports."""

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: str | Path,
        device: str | torch.device = "cpu",
        dataset: ImageDataset | None = None,
        data_dir: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        self.progress = progress
        self.amp = cfg.amp and self.device.type == "cuda"
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(cfg.seed)
        self.G = Generator(cfg.generator_config()).to(self.device).train().requires_grad_(False)
        self.D = Discriminator(cfg.discriminator_config()).to(self.device).train().requires_grad_(False)
        if cfg.channels_last:
            self.D = self.D.to(memory_format=torch.channels_last)
        self.G_ema = copy.deepcopy(self.G).eval()
        g_lr, g_betas = lazy_adam_params(cfg.lr, cfg.beta2, cfg.pl_interval if cfg.pl_weight > 0 else None)
        d_lr, d_betas = lazy_adam_params(
            cfg.lr, cfg.beta2, cfg.r1_interval if cfg.r1_gamma_value > 0 else None
        )
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=g_lr, betas=g_betas, eps=1e-8)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=d_lr, betas=d_betas, eps=1e-8)
        self.pl = PathLengthRegularizer()
        if dataset is None:
            dataset = make_dataset(
                cfg, data_dir if data_dir is not None else self.run_dir.parent / "data", progress
            )
        if dataset.resolution != cfg.res:
            raise ValueError(f"dataset resolution {dataset.resolution} != config res {cfg.res}")
        self.dataset = dataset
        self.step = 0  # minibatches done
        self.nimg = 0  # real images shown to D
        self.train_s = 0.0  # seconds spent in train_step, over all chunks
        self.chunks: list[dict] = []  # one entry per run() call: device, threads, seconds, kimg
        self._stop = threading.Event()

    # -- one iteration ---------------------------------------------------------------------------
    def _autocast(self):
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self) -> dict[str, float]:
        """One G and D iteration (plus due regularisers); returns this step's losses as floats."""
        cfg, G, D = self.cfg, self.G, self.D
        n = cfg.batch
        real = self.dataset.sample(n, self.device)  # [N, 3, H, W]
        if cfg.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        z = torch.randn([n, G.z_dim], device=self.device)
        stats: dict[str, torch.Tensor] = {}

        # 1. fakes, with the graph kept for the G step
        G.requires_grad_(True)
        with self._autocast():
            ws = mapping_with_mixing(G, z, cfg.style_mixing_prob, update_emas=True)
            fake, _ = G.synthesis(ws, noise_mode=cfg.noise_mode)  # [N, 3, H, W]

        # 2. D: logistic loss, then lazy R1
        D.requires_grad_(True)
        self.opt_D.zero_grad(set_to_none=True)
        with self._autocast():
            real_logits = D(real).float()
            fake_logits = D(fake.detach()).float()
        loss_real, loss_fake = d_logistic(real_logits, fake_logits)
        (loss_real + loss_fake).backward()
        self.opt_D.step()
        stats.update(
            D_real=loss_real.detach(),
            D_fake=loss_fake.detach(),
            logit_real=real_logits.detach().mean(),
            logit_fake=fake_logits.detach().mean(),
        )
        gamma = cfg.r1_gamma_value
        if gamma > 0 and self.step % cfg.r1_interval == 0:
            self.opt_D.zero_grad(set_to_none=True)
            penalty, logits = r1_penalty(D, real)
            (penalty.mean() * (gamma / 2) * cfg.r1_interval + logits.mean() * 0).backward()
            self.opt_D.step()
            stats["r1"] = penalty.detach().mean()
        D.requires_grad_(False)

        # 3. G: non-saturating loss through the same fakes, then lazy path length
        self.opt_G.zero_grad(set_to_none=True)
        with self._autocast():
            loss_G = g_nonsaturating(D(fake).float())
        loss_G.backward()
        self.opt_G.step()
        stats["G"] = loss_G.detach()
        if cfg.pl_weight > 0 and self.step % cfg.pl_interval == 0:
            self.opt_G.zero_grad(set_to_none=True)
            z_pl = torch.randn([max(n // cfg.pl_batch_shrink, 1), G.z_dim], device=self.device)
            penalty = self.pl(G, z_pl, cfg.style_mixing_prob, cfg.noise_mode)
            (penalty.mean() * cfg.pl_weight * cfg.pl_interval).backward()
            self.opt_G.step()
            stats["pl"] = penalty.detach().mean()
        G.requires_grad_(False)

        # 4. bookkeeping and G_ema
        self.step += 1
        self.nimg += n
        self.update_ema()
        return {k: float(v) for k, v in stats.items()}

    @torch.no_grad()
    def update_ema(self) -> None:
        cfg = self.cfg
        ema_nimg = cfg.ema_kimg_value * 1000
        if cfg.ema_rampup is not None:
            ema_nimg = min(ema_nimg, self.nimg * cfg.ema_rampup)
        beta = 0.5 ** (cfg.batch / max(ema_nimg, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
            p_ema.lerp_(p, 1 - beta)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
            b_ema.copy_(b)

    # -- outputs -----------------------------------------------------------------------------------
    @property
    def kimg(self) -> float:
        return self.nimg / 1000

    @torch.no_grad()
    def sample_grid(self, path: str | Path | None = None) -> Path:
        """G_ema on z seeds 0..grid_size-1: top half psi 1.0, bottom half psi 0.7 (const noise), 8 columns."""
        n = self.cfg.grid_size
        z = torch.cat([z_from_seed(s, self.G_ema.z_dim) for s in range(n)]).to(self.device)
        out = []
        for psi in (1.0, 0.7):
            for i in range(0, n, 16):
                out.append(to_uint8(self.G_ema(z[i : i + 16], truncation_psi=psi, noise_mode="const")))
        path = path or self.run_dir / "grids" / f"grid_{int(self.kimg):06d}.png"
        return save_image_grid(np.concatenate(out), path, cols=min(8, n))

    def save_reals(self) -> Path:
        """A grid of training images (drawn from a separate RNG, so the training stream is untouched)."""
        ds = copy.copy(self.dataset)
        ds.rng = np.random.default_rng(12345)
        imgs = to_uint8(ds.sample(min(self.cfg.grid_size, 64)))
        return save_image_grid(imgs, self.run_dir / "grids" / "reals.png")

    def provenance(self) -> dict:
        return {
            "kimg": round(self.kimg, 3),
            "step": self.step,
            "seed": self.cfg.seed,
            "train_config": self.cfg.to_dict(),
            "compute": {"train_hours": round(self.train_s / 3600, 4), "chunks": self.chunks},
            "trained_with": "scripts/train_generator.py",
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
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "pl": self.pl.state_dict(),
            "step": self.step,
            "nimg": self.nimg,
            "train_s": self.train_s,
            "chunks": self.chunks,
            "rng": _rng_state(self.device),
            "data": self.dataset.state_dict(),
        }

    def load_state_dict(self, ckpt: dict) -> None:
        fixed = [k for k in ckpt["config"] if k not in RESUMABLE_OVERRIDES]
        diff = [k for k in fixed if ckpt["config"][k] != getattr(self.cfg, k)]
        if diff:
            raise ValueError(f"checkpoint was made with a different training config: {diff}")
        self.G.load_state_dict(ckpt["G"])
        self.D.load_state_dict(ckpt["D"])
        self.G_ema.load_state_dict(ckpt["G_ema"])
        self.opt_G.load_state_dict(ckpt["opt_G"])
        self.opt_D.load_state_dict(ckpt["opt_D"])
        self.pl.load_state_dict(ckpt["pl"])
        self.step, self.nimg, self.train_s = ckpt["step"], ckpt["nimg"], ckpt["train_s"]
        self.chunks = list(ckpt["chunks"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if self.device.type == "cuda" and "cuda" in ckpt["rng"]:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], self.device)
        self.dataset.load_state_dict(ckpt["data"])

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Everything needed to continue the run bit for bit, written atomically."""
        return save_atomically(self.state_dict(), path or self.run_dir / CHECKPOINT_NAME)

    @staticmethod
    def read_checkpoint(path: str | Path) -> dict:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a livedrag training checkpoint")
        return ckpt

    @classmethod
    def resume(
        cls,
        run_dir: str | Path,
        device: str | torch.device = "cpu",
        overrides: dict | None = None,
        dataset: ImageDataset | None = None,
        data_dir: str | Path | None = None,
        progress: bool = True,
    ) -> Trainer:
        """Rebuild a trainer from ``run_dir/checkpoint.pt``; ``overrides`` may change RESUMABLE_OVERRIDES."""
        ckpt = cls.read_checkpoint(Path(run_dir) / CHECKPOINT_NAME)
        cfg = TrainConfig.from_dict(ckpt["config"])
        bad = sorted(set(overrides or {}) - set(RESUMABLE_OVERRIDES))
        if bad:
            raise ValueError(f"cannot change {bad} when resuming (only {list(RESUMABLE_OVERRIDES)})")
        cfg = replace(cfg, **(overrides or {}))
        trainer = cls(cfg, run_dir, device, dataset=dataset, data_dir=data_dir, progress=progress)
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

    def run(self, minutes: float | None = None, max_steps: int | None = None) -> str:
        """Train until ``total_kimg``, ``minutes`` of wall time, ``max_steps`` or a stop request;
        always checkpoint at the end. Returns "done", "time", "steps" or "stopped"."""
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        if self.step == 0:
            self.save_reals()
            self.sample_grid()
        chunk = {
            "device": str(self.device),
            "device_name": _device_name(self.device),
            "threads": torch.get_num_threads(),
            "start_kimg": round(self.kimg, 3),
            "seconds": 0.0,
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
                sec_per_kimg = (now - t_log) / max((self.nimg - nimg_log) / 1000, 1e-9)
                means = {k: round(float(np.mean(v)), 5) for k, v in acc.items()}
                self._log(
                    {
                        "kimg": round(self.kimg, 3),
                        "step": self.step,
                        "sec_per_kimg": round(sec_per_kimg, 3),
                        "train_hours": round(self.train_s / 3600, 4),
                        **means,
                    }
                )
                bar.set_postfix_str(
                    f"{sec_per_kimg:.1f} s/kimg G {means.get('G', 0):.3f} "
                    f"D {means.get('D_real', 0) + means.get('D_fake', 0):.3f}",
                    refresh=False,
                )
                acc.clear()
                t_log, nimg_log = now, self.nimg
            if crossed(cfg.grid_kimg):
                self.sample_grid()
            if crossed(cfg.snap_kimg):
                self.save_snapshot()
            if crossed(cfg.ckpt_kimg):
                self.save_checkpoint()

        return run_chunk(self, chunk, cfg.total_kimg, minutes, max_steps, self.progress, after_step)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()
