"""Training images: SynthFaces rendered once into a cached uint8 ``.npy`` file (or on the fly).

Seed ranges (the renderer is deterministic per seed):
  * training images are renderer seeds ``[0, N)`` with ``N <= MAX_TRAIN_IMAGES`` (1_000_000, below
    the landmark detector's validation and evaluation seeds, which start at 1_000_000);
  * held-out evaluation of the generator uses renderer seeds ``>= EVAL_SEED_START`` (10_000_000).

Minibatches are drawn with replacement by a seeded numpy RNG whose state goes into the trainer's
checkpoints, so a resumed run sees the same images as an uninterrupted one.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

TRAIN_SEED_START = 0
MAX_TRAIN_IMAGES = 1_000_000
EVAL_SEED_START = 10_000_000


def check_train_n(n: int) -> None:
    if not 0 < n <= MAX_TRAIN_IMAGES:
        raise ValueError(
            f"training images must number 1..{MAX_TRAIN_IMAGES} (seeds [0, n) stay clear of evaluation seeds)"
        )


def cache_path(data_dir: str | Path, res: int, n: int) -> Path:
    return Path(data_dir) / f"synthfaces_{res}_{n}.npy"


def _render_chunk(args: tuple[int, int, int]) -> np.ndarray:
    from server.synthfaces import render_batch

    start, stop, res = args
    images, _ = render_batch(list(range(start, stop)), res)
    return np.ascontiguousarray(images, dtype=np.uint8)


def render_synthfaces(
    path: str | Path, res: int, n: int, workers: int | None = None, chunk: int = 256, progress: bool = True
) -> Path:
    """Render training seeds ``[0, n)`` at ``res`` px into ``path`` (uint8 [n, res, res, 3]), atomically."""
    check_train_n(n)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, res, res, 3))
    jobs = [(s, min(s + chunk, n), res) for s in range(TRAIN_SEED_START, TRAIN_SEED_START + n, chunk)]
    workers = workers if workers is not None else min(len(jobs), os.cpu_count() or 1)
    bar = tqdm(total=n, desc=f"render {path.name}", unit="img", disable=not progress, dynamic_ncols=True)
    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            for (s, e, _), imgs in zip(jobs, pool.imap(_render_chunk, jobs), strict=True):
                out[s:e] = imgs
                bar.update(e - s)
    else:
        for job in jobs:
            out[job[0] : job[1]] = _render_chunk(job)
            bar.update(job[1] - job[0])
    bar.close()
    out.flush()
    del out
    tmp.replace(path)
    return path


def smooth_random_images(n: int, res: int, seed: int = 0) -> np.ndarray:
    """Random smooth colour images uint8 [n, res, res, 3] (test data when no renderer is needed)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    img = torch.nn.functional.interpolate(low, size=(res, res), mode="bilinear", align_corners=False)
    return (img * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


class ImageDataset:
    """uint8 images [N, H, W, 3] (in memory or memory-mapped) -> float minibatches [B, 3, H, W] in [-1, 1]."""

    def __init__(self, images: np.ndarray, seed: int = 0, xflip: bool = False) -> None:
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {list(images.shape)}")
        self.images = images
        self.xflip = xflip
        self.rng = np.random.default_rng(seed)

    @classmethod
    def from_npy(
        cls, path: str | Path, seed: int = 0, xflip: bool = False, in_memory: bool = True
    ) -> ImageDataset:
        images = np.load(path, mmap_mode=None if in_memory else "r")
        return cls(images, seed=seed, xflip=xflip)

    @property
    def resolution(self) -> int:
        return self.images.shape[1]

    def __len__(self) -> int:
        return self.images.shape[0]

    def _indices(self, batch: int) -> np.ndarray:
        return np.sort(self.rng.integers(0, len(self), batch))

    def _get(self, idx: np.ndarray) -> np.ndarray:
        return self.images[idx]

    def sample(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        x = self._get(self._indices(batch))  # [B, H, W, 3] uint8
        if self.xflip:
            flip = self.rng.random(batch) < 0.5
            x = x.copy()
            x[flip] = x[flip, :, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(x)).to(device).permute(0, 3, 1, 2)
        return x.float().mul_(1 / 127.5).sub_(1)  # [B, 3, H, W]

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, d: dict) -> None:
        self.rng.bit_generator.state = d["rng"]


class RenderedDataset(ImageDataset):
    """Renders every minibatch on the fly from training seeds ``[0, n)`` (no cache file)."""

    def __init__(
        self,
        res: int,
        n: int,
        seed: int = 0,
        xflip: bool = False,
        render: Callable[[Sequence[int], int], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        if render is None:
            from server.synthfaces import render_batch as render
        check_train_n(n)
        self.render = render
        self.res = res
        self.n = n
        super().__init__(np.zeros((1, res, res, 3), np.uint8), seed=seed, xflip=xflip)

    @property
    def resolution(self) -> int:
        return self.res

    def __len__(self) -> int:
        return self.n

    def _get(self, idx: np.ndarray) -> np.ndarray:
        images, _ = self.render([TRAIN_SEED_START + int(i) for i in idx], self.res)
        return images
