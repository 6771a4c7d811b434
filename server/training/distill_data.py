"""What the distillation trainer feeds on: renders of latents (in worker processes for a GPU),
the face attributes w is taught to carry, and the image measures of its loss."""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import torch
import torch.nn.functional as F

from server.synthfaces import HAIR_STYLES, N_SLOTS, FaceParams, mix_params, params_from_z, render


def sobel(img: torch.Tensor) -> torch.Tensor:
    """Horizontal and vertical Sobel responses per channel: [N, C, H, W] -> [N, 2C, H, W]."""
    k = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=img.device) / 8
    c = img.shape[1]
    kernel = torch.stack([k, k.t()]).unsqueeze(1).repeat(c, 1, 1, 1).to(img.dtype)  # [2C, 1, 3, 3]
    return F.conv2d(F.pad(img, (1, 1, 1, 1), mode="replicate"), kernel, groups=c)


def render_faces(zs: np.ndarray, res: int, mix_with: np.ndarray | None = None) -> np.ndarray:
    """Renders of latents [N, N_SLOTS] as uint8 [N, res, res, 3]; with ``mix_with``, the geometry
    of ``zs`` and the colours and light of ``mix_with``."""
    out = np.empty((len(zs), res, res, 3), np.uint8)
    for i, z in enumerate(zs):
        p = params_from_z(z)
        if mix_with is not None:
            p = mix_params(p, params_from_z(mix_with[i]))
        out[i] = render(p, res)[0]
    return out


def _render_job(args: tuple[np.ndarray, int, np.ndarray | None]) -> np.ndarray:
    return render_faces(*args)


def as_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def render_targets(zs: np.ndarray, res: int, mix_with: np.ndarray | None = None) -> torch.Tensor:
    """``render_faces`` as float [N, 3, res, res] in [-1, 1]."""
    return as_tensor(render_faces(zs, res, mix_with))


def attributes(zs: np.ndarray) -> np.ndarray:
    """What w should carry, per latent [N, N_SLOTS] -> float32 [N, A]: every numeric field of the
    face (colours as RGB), the hair style one-hot, the background angle as cos and sin."""
    rows = []
    for z in zs:
        p = params_from_z(z)
        row: list[float] = []
        for f in fields(FaceParams):
            v = getattr(p, f.name)
            if f.name == "hair_style":
                row += [float(v == k) for k in range(len(HAIR_STYLES))]
            elif f.name == "bg_angle":
                row += [math.cos(v), math.sin(v)]
            elif isinstance(v, tuple):
                row += [float(c) for c in v]
            else:
                row.append(float(v))
        rows.append(row)
    return np.asarray(rows, dtype=np.float32)


class AttributeReadout(torch.nn.Module):
    """One linear layer from w to the standardised attributes (trained with the mapping network)."""

    def __init__(self, w_dim: int, seed: int = 0) -> None:
        super().__init__()
        z = np.random.default_rng(seed + 7919).standard_normal((4096, N_SLOTS))
        a = torch.from_numpy(attributes(z))
        self.register_buffer("mean", a.mean(0))
        self.register_buffer("std", a.std(0).clamp_min(1e-3))
        self.linear = torch.nn.Linear(w_dim, a.shape[1])

    def loss(self, w: torch.Tensor, zs: np.ndarray) -> torch.Tensor:
        """MSE between the read-out of w [N, w_dim] and the standardised attributes of zs."""
        target = (torch.from_numpy(attributes(zs)).to(w.device) - self.mean) / self.std
        return (self.linear(w) - target).square().mean()


class Renderer:
    """Renders training batches, in worker processes when ``workers`` > 0 (a GPU outruns one core)."""

    def __init__(self, res: int, workers: int = 0) -> None:
        self.res, self.workers = res, workers
        self.pool = None
        if workers > 0:
            import multiprocessing as mp

            self.pool = mp.get_context("fork").Pool(workers)

    def submit(self, za: np.ndarray, zb: np.ndarray | None):
        """Start rendering a batch; ``result()`` of the returned handle gives uint8 images."""
        if self.pool is None:
            return _Done(render_faces(za, self.res, zb))
        parts = np.array_split(np.arange(len(za)), min(self.workers, len(za)))
        jobs = [(za[i], self.res, None if zb is None else zb[i]) for i in parts]
        return _Pending(self.pool.map_async(_render_job, jobs))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool = None


class _Done:
    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def result(self) -> np.ndarray:
        return self.images


class _Pending:
    def __init__(self, handle) -> None:
        self.handle = handle

    def result(self) -> np.ndarray:
        return np.concatenate(self.handle.get())


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image of [-1, 1] images (peak-to-peak 2)."""
    mse = (a.float() - b.float()).square().mean(dim=(1, 2, 3)).clamp_min(1e-10)
    return 10 * torch.log10(4.0 / mse)
