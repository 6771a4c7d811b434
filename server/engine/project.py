"""Projection of an image into W+ by optimisation, step by step so a room can watch it converge.

``ProjectSession`` starts from a W+ estimate (the encoder's, ``server.engine.encoder``, or
``w_avg``) and takes one Adam step per ``step()`` on all W+ rows, minimising

    pixel_weight * weighted pixel MSE + perceptual_weight * PerceptualDistance(image, target)

(``server.engine.perceptual``: the project's own LPIPS-like distance on the SynthFaces detector).
The latent is optimised in normalised units ``u = (w - w_avg) / w_std`` (per-dimension std of W
under the mapping), so one learning rate fits every dimension. The learning rate ramps up over
``lr_rampup`` steps. Optional Gaussian noise on ``u`` (``noise_factor``, ramped to 0 over the
first ``noise_ramp`` of ``max_steps``) helps escape a poor start, as in NVIDIA's projector.

Stopping: ``max_steps`` W+ steps at most; earlier, "converged" once ``min_steps`` are done and
the loss improved by less than ``converge_tol`` (relative) over the last ``converge_window``
steps.

Pivotal tuning (Roich et al., "Pivotal Tuning for Latent-based Editing of Real Images", 2021):
with ``pti_steps > 0`` the W+ phase is followed by ``pti_steps`` steps (one per ``step()``) that
fine-tune a private deep copy of the generator with the latent fixed. Memory cost per session:
the copy's parameters plus their gradients and two Adam moments, i.e. 4x the generator's
parameter bytes (about 24 MB for the embedded 64 px model with its 1.5 M parameters, about
0.5 GB for a 30 M-parameter 256 px StyleGAN2), held until the session is dropped. After pivotal
tuning the latent reproduces the image only with ``session.generator`` (the tuned copy); a
caller that drags it further must use that generator.

Frames: ``step()`` returns the image of its own forward pass (the latent before that step's
update, as every ``StepResult``: frame and loss describe the same pass), except that the step
that finishes the session returns the image of the final latent, so the last frame equals
``render()``.
"""

from __future__ import annotations

import copy
import math
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Literal

import numpy as np
import torch

from .generator import Generator, to_uint8
from .perceptual import PerceptualDistance, shared_perceptual
from .session import StepResult

ProjectReason = Literal["converged", "max_steps"]


@dataclass(frozen=True)
class ProjectOptions:
    max_steps: int = 100  # W+ steps at most
    min_steps: int = 10  # never "converged" before this many W+ steps
    lr: float = 0.08  # Adam learning rate on the normalised latent u = (w - w_avg) / w_std
    lr_rampup: int = 3  # steps of linear warm-up
    betas: tuple[float, float] = (0.9, 0.99)
    pixel_weight: float = 1.0  # weighted pixel MSE of images in [-1, 1]
    perceptual_weight: float = 0.2  # PerceptualDistance on the SynthFaces detector
    noise_factor: float = 0.0  # Gaussian noise on u at the start (units of W std)
    noise_ramp: float = 0.5  # fraction of max_steps over which that noise goes to 0
    converge_window: int = 10  # steps over which the relative improvement is measured
    converge_tol: float = 0.005  # "converged" when the loss improved by less than this fraction
    pti_steps: int = 0  # pivotal tuning steps after the W+ phase (0 = off)
    pti_lr: float = 1e-3  # Adam learning rate of pivotal tuning (measured better than 3e-4 here)
    noise_mode: str = "const"

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.min_steps < 0 or self.converge_window < 1 or self.pti_steps < 0:
            raise ValueError("min_steps and pti_steps must be >= 0, converge_window >= 1")
        if not (self.lr > 0 and self.pti_lr > 0):
            raise ValueError("learning rates must be > 0")
        if (
            self.pixel_weight < 0
            or self.perceptual_weight < 0
            or self.pixel_weight + self.perceptual_weight == 0
        ):
            raise ValueError("pixel_weight and perceptual_weight must be >= 0 and not both 0")
        if self.noise_mode not in ("const", "none"):
            raise ValueError(f"noise_mode must be 'const' or 'none' (deterministic), got {self.noise_mode!r}")


_STATS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@torch.no_grad()
def latent_std(G: Generator, n: int = 4096) -> torch.Tensor:
    """Per-dimension std of W under G's mapping (psi = 1), [w_dim], cached per generator."""
    cached = _STATS.get(G)
    if cached is None:
        gen = torch.Generator().manual_seed(12345)
        z = torch.randn(n, G.z_dim, generator=gen).to(G.mapping.w_avg.device)
        cached = G.mapping(z)[:, 0].std(0).clamp_min(1e-6)
        _STATS[G] = cached
    return cached


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


class ProjectSession:
    """One projection of one target image into W+; advanced by ``step()`` (see the module doc)."""

    def __init__(
        self,
        G: Generator,
        target: np.ndarray,
        w_init: torch.Tensor | None = None,
        options: ProjectOptions = ProjectOptions(),
        *,
        weight: np.ndarray | None = None,
        perceptual: PerceptualDistance | None = None,
    ) -> None:
        res = G.img_resolution
        target = np.asarray(target)
        if target.dtype != np.uint8 or target.shape != (res, res, 3):
            raise ValueError(
                f"target must be uint8 [{res}, {res}, 3], got {target.dtype} {list(target.shape)}"
            )
        self.G = G
        self.options = options
        self.device = G.mapping.w_avg.device
        self._target_u8 = target.copy()
        self.target = torch.from_numpy(target).to(self.device).permute(2, 0, 1)[None].float() / 127.5 - 1
        if weight is not None:
            weight = np.asarray(weight, dtype=np.float32)
            if weight.shape != (res, res):
                raise ValueError(f"weight must be float [{res}, {res}], got {list(weight.shape)}")
            if not np.isfinite(weight).all() or weight.min() < 0 or weight.max() > 1:
                raise ValueError("weight must be finite and in [0, 1]")
            if weight.sum() == 0:
                raise ValueError("weight is 0 everywhere: nothing to match")
            self.weight = torch.from_numpy(weight).to(self.device)[None, None]
        else:
            self.weight = None
        self.perceptual = perceptual
        if options.perceptual_weight > 0 and perceptual is None:
            self.perceptual = shared_perceptual(self.device)
        self.target_feats = None
        if self.perceptual is not None and options.perceptual_weight > 0:
            with torch.no_grad():
                self.target_feats = self.perceptual.features(self.target)
        self.w_avg = G.mapping.w_avg.detach()
        self.w_std = latent_std(G)
        if w_init is None:
            w_init = self.w_avg.expand(1, G.num_ws, G.w_dim)
        w_init = G.expand_ws(w_init.detach().to(self.device, torch.float32))
        if w_init.shape[0] != 1:
            raise ValueError(
                f"w_init must be one latent [1, {G.num_ws}, {G.w_dim}], got {list(w_init.shape)}"
            )
        self.u = torch.nn.Parameter(((w_init - self.w_avg) / self.w_std).clone())
        self.opt = torch.optim.Adam([self.u], lr=options.lr, betas=options.betas)
        self.noise_gen = torch.Generator().manual_seed(0)
        self.generator = G  # the tuned private copy after pivotal tuning starts
        self._pti_opt: torch.optim.Optimizer | None = None
        self.w_steps = 0
        self.pti_done = 0
        self.losses: list[float] = []
        self.reason: ProjectReason | None = None
        self._w_phase_over = False
        self._frame: np.ndarray | None = None  # image of the current latent (cache)
        self._last: StepResult | None = None

    # -- state --------------------------------------------------------------------------------------
    @property
    def step_index(self) -> int:
        return self.w_steps + self.pti_done

    @property
    def done(self) -> bool:
        return self._w_phase_over and self.pti_done >= self.options.pti_steps

    @property
    def in_w_phase(self) -> bool:
        return not self._w_phase_over

    @property
    def handles(self) -> list:
        return []

    @property
    def targets(self) -> list:
        return []

    def w(self) -> torch.Tensor:
        return self.w_avg + self.w_std * self.u

    def latent(self) -> torch.Tensor:
        """The current W+ [1, num_ws, w_dim], detached, float32, on the CPU."""
        return self.w().detach().float().cpu().clone()

    @torch.no_grad()
    def render(self) -> np.ndarray:
        """The image of the current latent (with the tuned generator after pivotal tuning)."""
        if self._frame is None:
            img, _ = self.generator.synthesis(self.w().detach(), noise_mode=self.options.noise_mode)
            self._frame = to_uint8(img)[0]
        return self._frame

    def psnr(self) -> float:
        """PSNR of the current image vs the target, dB (unweighted)."""
        return psnr_uint8(self.render(), self._target_u8)

    def set_options(self, **changes) -> None:
        """Change options between steps (e.g. ``max_steps``); unknown names raise ValueError."""
        known = {f.name for f in fields(ProjectOptions)}
        bad = sorted(set(changes) - known)
        if bad:
            raise ValueError(f"unknown projection options: {bad}")
        self.options = replace(self.options, **changes)
        for g in self.opt.param_groups:
            g["lr"] = self.options.lr
        if self._w_phase_over and self.reason == "max_steps" and self.w_steps < self.options.max_steps:
            self._w_phase_over, self.reason = False, None  # more budget: continue

    # -- objective ------------------------------------------------------------------------------------
    def _loss(self, img: torch.Tensor, i: int | None = None) -> torch.Tensor:
        """Objective of this session for ``img`` [1, 3, H, W]."""
        o = self.options
        diff = (img - self.target).square()
        pix = (diff * self.weight).sum() / (self.weight.sum() * 3) if self.weight is not None else diff.mean()
        loss = o.pixel_weight * pix
        if self.target_feats is not None:
            x = img if self.weight is None else self.weight * img + (1 - self.weight) * self.target
            loss = loss + o.perceptual_weight * self.perceptual.distance_to(x, self.target_feats).sum()
        return loss

    def _current_lr(self) -> float:
        o = self.options
        return o.lr * min(1.0, (self.w_steps + 1) / max(1, o.lr_rampup))

    def _noisy_u(self) -> torch.Tensor:
        o = self.options
        ramp = o.noise_ramp * o.max_steps
        if o.noise_factor <= 0 or ramp <= 0 or self.w_steps >= ramp:
            return self.u
        scale = o.noise_factor * max(0.0, 1 - self.w_steps / ramp) ** 2
        return self.u + scale * torch.randn(self.u.shape, generator=self.noise_gen).to(self.device)

    def _after_w_step(self, loss: float) -> None:
        """Bookkeeping after one W+ update: history, convergence, step cap."""
        o = self.options
        self.w_steps += 1
        self.losses.append(loss)
        self._frame = None
        if self.w_steps >= o.max_steps:
            self._w_phase_over, self.reason = True, "max_steps"
        elif self.w_steps >= max(o.min_steps, o.converge_window + 1):
            old = self.losses[-o.converge_window - 1]
            if old <= 0 or (old - loss) / old < o.converge_tol:
                self._w_phase_over, self.reason = True, "converged"

    def _result(self, frame: np.ndarray, loss: float, seconds: float) -> StepResult:
        if self.done:
            frame = self.render()
        self._last = StepResult(
            frame=frame,
            handles=[],
            targets=[],
            step=self.step_index,
            done=self.done,
            reason=self.reason if self.done else None,
            loss=loss,
            seconds=seconds,
        )
        return self._last

    # -- stepping -------------------------------------------------------------------------------------
    def step(self) -> StepResult:
        """One W+ Adam step (or one pivotal-tuning step after the W+ phase); see the module doc."""
        if self.done:
            if self._last is None:
                return self._result(self.render(), 0.0, 0.0)
            return self._last
        if not self._w_phase_over:
            return project_step_batch([self])[0]
        return self._pti_step()

    def _pti_step(self) -> StepResult:
        t0 = time.perf_counter()
        if self._pti_opt is None:
            self.generator = copy.deepcopy(self.G).requires_grad_(False)
            self.generator.synthesis.requires_grad_(True)
            self._pti_opt = torch.optim.Adam(self.generator.synthesis.parameters(), lr=self.options.pti_lr)
        w = self.w().detach()
        img, _ = self.generator.synthesis(w, noise_mode=self.options.noise_mode)
        loss = self._loss(img)
        self._pti_opt.zero_grad(set_to_none=True)
        loss.backward()
        self._pti_opt.step()
        self.pti_done += 1
        frame = to_uint8(img.detach())[0]
        self._frame = None
        return self._result(frame, float(loss.detach()), time.perf_counter() - t0)


def project_step_batch(sessions: Sequence[ProjectSession]) -> list[StepResult]:
    """Step several sessions; those in their W+ phase on one generator share ONE forward/backward.

    Each session keeps its own Adam state; the summed objective of independent images gives each
    latent the gradient of its own objective, so the result equals stepping them one by one (up to
    floating-point rounding). Sessions that are done return their last result; sessions in pivotal
    tuning step alone (each owns its generator copy).
    """
    t0 = time.perf_counter()
    results: list[StepResult | None] = [None] * len(sessions)
    groups: dict[tuple[int, str], list[int]] = {}
    for i, s in enumerate(sessions):
        if s.done or not s.in_w_phase:
            continue
        groups.setdefault((id(s.G), s.options.noise_mode), []).append(i)
    for idx in groups.values():
        batch = [sessions[i] for i in idx]
        G = batch[0].G
        for s in batch:
            for g in s.opt.param_groups:
                g["lr"] = s._current_lr()
        u = torch.cat([s._noisy_u() for s in batch])
        ws = batch[0].w_avg + batch[0].w_std * u
        img, _ = G.synthesis(ws, noise_mode=batch[0].options.noise_mode)
        losses = [s._loss(img[k : k + 1]) for k, s in enumerate(batch)]
        for s in batch:
            s.opt.zero_grad(set_to_none=True)
        torch.stack(losses).sum().backward()
        for s in batch:
            s.opt.step()
        frames = to_uint8(img.detach())
        for k, s in enumerate(batch):
            s._after_w_step(float(losses[k].detach()))
        seconds = time.perf_counter() - t0
        for k, (i, s) in enumerate(zip(idx, batch, strict=True)):
            results[i] = s._result(frames[k], float(losses[k].detach()), seconds)
    for i, s in enumerate(sessions):
        if results[i] is None:
            results[i] = s.step()  # done (last result) or pivotal tuning
    return results  # type: ignore[return-value]
