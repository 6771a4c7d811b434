"""How the worker starts projections: the engine's ProjectSession and blend_session behind one seam.

A :class:`Projector` turns a room's :class:`~server.core.state.Task` (with the target picture and the
current latent the worker fetched) into a session that advances one optimisation step per call,
and steps several at once (``project_step_batch``). It holds the optional encoder (the shipped
``synthfaces_encoder.safetensors`` when it fits the loaded generator: ``w_init``; without it
projections start from ``w_avg``) and the perceptual distance, both loaded once.

Sessions follow the engine contract (server/engine/project.py): ``step() -> StepResult`` whose
``frame`` is the image after the step; ``done`` / ``reason`` ("converged" or "max_steps");
``latent()`` [1, num_ws, w_dim] on the CPU; ``psnr()`` in dB. Method ``encoder`` is the encoder's
one forward pass: an :class:`EncodedSession` with no optimisation step, whose only step shows the
encoded image and ends. Tests may give the worker another Projector (a fake with the same methods).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from server.engine.generator import Generator
from server.engine.session import StepResult

log = logging.getLogger(__name__)


class ProjectionError(Exception):
    """A projection cannot start (no encoder for method encoder, a missing target...); shown as is."""


class ProjectionSession(Protocol):
    done: bool

    def step(self) -> StepResult: ...

    def latent(self) -> torch.Tensor: ...

    def psnr(self) -> float: ...


class EncodedSession:
    """Method ``encoder``: the encoder's W+ as is. One step (its image), then done ("max_steps":
    zero optimisation steps were allowed)."""

    def __init__(self, G: Generator, target: np.ndarray, w: torch.Tensor) -> None:
        from server.engine.project import psnr_uint8

        self.G, self.target, self.w, self.done = G, target, w.detach(), False
        self._frame = self.render()
        self._psnr = psnr_uint8(self._frame, target)

    @torch.no_grad()
    def render(self) -> np.ndarray:
        from server.engine.generator import to_uint8

        img, _ = self.G.synthesis(self.w, noise_mode="const")
        return to_uint8(img)[0][..., :3]

    def step(self) -> StepResult:
        self.done = True
        return StepResult(self._frame, [], [], 1, True, "max_steps", 0.0, 0.0)  # type: ignore[arg-type]

    def latent(self) -> torch.Tensor:
        return self.w.to("cpu", torch.float32)

    def psnr(self) -> float:
        return self._psnr


@dataclass(frozen=True)
class BlendSource:
    """Where a blend's pixels come from: a seed's image, or the uploaded target picture."""

    seed: int | None = None
    truncation: float = 0.7
    target: np.ndarray | None = None  # uint8 [H, W, 3] at the model's resolution


class Projector:
    """Projection sessions for one generator (on the worker's thread only)."""

    def __init__(self, G: Generator, encoder: Any | None = None, perceptual: Any | None = None) -> None:
        self.G = G
        self.encoder = encoder
        self._perceptual = perceptual
        self._perceptual_failed = False

    @classmethod
    def load(cls, G: Generator, encoder_path: str | None = None) -> Projector:
        """The shipped (or given) encoder when it fits ``G``; without one, projections start from
        w_avg and method ``encoder`` is not offered. A named file that fails raises EncoderError."""
        from server.engine.encoder import EncoderError, load_encoder

        encoder = None
        try:
            encoder = load_encoder(encoder_path, G=G).eval().requires_grad_(False)
        except EncoderError as e:
            if encoder_path is not None:
                raise
            log.info("projection without an encoder (%s)", str(e).split(";")[0])
        return cls(G, encoder)

    @property
    def methods(self) -> list[str]:
        """Projection methods this server offers (``encoder`` needs an encoder)."""
        return ["encoder", "optimize"] if self.encoder is not None else ["optimize"]

    @property
    def device(self) -> torch.device:
        return self.G.mapping.w_avg.device

    def perceptual(self) -> Any | None:
        """The shared perceptual distance, or None when its network is not available (pixel loss only)."""
        if self._perceptual is None and not self._perceptual_failed:
            try:
                from server.engine.perceptual import shared_perceptual

                self._perceptual = shared_perceptual(self.device)
            except Exception as e:  # a checkout without the detector weights
                self._perceptual_failed = True
                log.warning("perceptual distance not available (%s): pixel loss only", e)
        return self._perceptual

    def w_init(self, target: np.ndarray) -> torch.Tensor | None:
        """The encoder's W+ [1, num_ws, w_dim] for a uint8 [H, W, 3] picture; None: no encoder."""
        if self.encoder is None:
            return None
        from server.engine.encoder import encode

        return encode(self.encoder, target[None]).to(self.device)

    def upload_session(
        self, target: np.ndarray, method: str, max_steps: int, pti_steps: int = 0
    ) -> ProjectionSession:
        """Project an uploaded picture: the encoder's latent (w_avg without one), then
        ``max_steps`` Adam steps (method ``optimize``) or none (method ``encoder``). With
        ``pti_steps > 0`` (method ``optimize`` only) the W+ phase is followed by that many pivotal
        tuning steps of a private copy of the generator (the session's ``generator``)."""
        from server.engine.project import ProjectOptions, ProjectSession

        w_init = self.w_init(target)
        if method == "encoder":
            if w_init is None:
                raise ProjectionError("this server has no encoder for this model: use method optimize")
            return EncodedSession(self.G, target, w_init)
        return ProjectSession(
            self.G,
            target,
            w_init,
            ProjectOptions(max_steps=max(1, max_steps), pti_steps=max(0, pti_steps)),
            perceptual=self.perceptual(),
        )

    def blend_session(
        self, w_base: torch.Tensor, source: BlendSource, region: np.ndarray, max_steps: int
    ) -> ProjectionSession:
        """A local edit: the source blended into ``region`` (bool [H, W]) of the current image,
        projected from ``w_base``. A seed's latent, or the encoded upload, is blended in the
        generator's features (StyleMapGAN); an upload without an encoder is pasted in pixels."""
        from server.engine.blend import blend_session
        from server.engine.project import ProjectOptions, ProjectSession

        options = ProjectOptions(max_steps=max_steps)
        if source.target is None:
            if source.seed is None:
                raise ProjectionError("a blend needs a source seed or an upload")
            with torch.no_grad():
                w_source = self.G.ws_from_seed(source.seed, truncation_psi=source.truncation).to(self.device)
        else:
            w_source = self.w_init(source.target)
            if w_source is None:
                target, weight = paste(self.render(w_base), source.target, region)
                return ProjectSession(
                    self.G, target, w_base, options, weight=weight, perceptual=self.perceptual()
                )
        return blend_session(self.G, w_base, w_source, region, options=options, perceptual=self.perceptual())

    @torch.no_grad()
    def render(self, ws: torch.Tensor) -> np.ndarray:
        img, _ = self.G.synthesis(ws.to(self.device), noise_mode="const")
        from server.engine.generator import to_uint8

        return to_uint8(img)[0][..., :3]

    def step_many(self, sessions: Sequence[ProjectionSession]) -> list[StepResult]:
        """One step of each session; the engine's sessions share one batched pass."""
        from server.engine.project import ProjectSession, project_step_batch

        batched = [i for i, s in enumerate(sessions) if isinstance(s, ProjectSession)]
        out: list[StepResult | None] = [None] * len(sessions)
        if batched:
            for i, r in zip(batched, project_step_batch([sessions[i] for i in batched]), strict=True):  # type: ignore[misc]
                out[i] = r
        for i, s in enumerate(sessions):
            if out[i] is None:
                out[i] = s.step()
        return out  # type: ignore[return-value]


def paste(
    base: np.ndarray, source: np.ndarray, region: np.ndarray, feather: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel composite: ``source`` inside ``region`` over ``base`` (uint8 [H, W, 3]), with a soft
    edge of ``feather`` pixels; returns (target uint8 [H, W, 3], weight float32 [H, W] of ones)."""
    alpha = region.astype(np.float32)
    for _ in range(feather):  # a 3x3 box blur per pass
        p = np.pad(alpha, 1, mode="edge")
        alpha = (
            sum(p[dy : dy + alpha.shape[0], dx : dx + alpha.shape[1]] for dy in range(3) for dx in range(3))
            / 9
        )
    a = alpha[..., None]
    target = np.clip(source.astype(np.float32) * a + base.astype(np.float32) * (1 - a) + 0.5, 0, 255)
    return target.astype(np.uint8), np.ones(region.shape, np.float32)
