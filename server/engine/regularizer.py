"""Auto DragGAN's Latent Regularizer: pulls predicted W+ rows back toward the generator's W distribution.

A residual MLP denoiser applied to each of the first ``n_rows`` W+ rows independently (with a
learned row embedding, since the rows drive different synthesis layers). In StyleGAN2 every
natural W+ row is a sample of W = mapping(z) (style mixing mixes whole rows), so "inside the
natural distribution" is a per-row property. Stage 1 trains it as a denoiser: mapping samples
(truncated by a random psi) plus Gaussian noise and sparse outliers -> the clean sample.

At inference it corrects each predictor step, not the latent itself. With c(w) = R(w) - w (the
denoiser's correction field) and a step w_t -> w' predicted by the Latent Predictor:

    w_{t+1} = w' + alpha * (c(w') - c(w_t))

Near the data a denoiser's Jacobian projects onto the W manifold, so this removes (a fraction
alpha of) the part of the step that leaves the manifold, and nothing else: a zero step is the
exact identity, a start latent the regularizer would not have produced (an inverted photo, an
earlier edit) is not pulled toward R's preferred latents, and dozens of sub-steps do not drift
toward R's fixed points (applying w + alpha * c(w) at every step did, in a first trial, dominate
the sub-steps' own small moves).

The output layer is zero-initialised, so an untrained regularizer is the identity.
Shapes: B = batch, R = n_rows, D = w_dim.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class RegularizerConfig:
    w_dim: int = 256  # W row size of the generator
    n_rows: int = 6  # rows it is applied to (the rows the predictor changes)
    hidden: int = 256  # MLP width
    blocks: int = 3  # residual blocks
    alpha: float = 0.5  # default strength at inference (0 = off, 1 = replace by R(w))

    def __post_init__(self) -> None:
        for name in ("w_dim", "n_rows", "hidden", "blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RegularizerConfig:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown RegularizerConfig fields: {unknown}")
        return cls(**d)


class _Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class LatentRegularizer(nn.Module):
    """R(w): W+ rows [B, R, D] -> denoised rows [B, R, D]; ``regularize_step`` corrects a step.

    ``w_avg`` / ``w_std`` (buffers, [w_dim]) normalise the rows; set them with ``latent_stats``.
    """

    def __init__(self, cfg: RegularizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))
        self.register_buffer("w_std", torch.ones(cfg.w_dim))
        self.inp = nn.Linear(cfg.w_dim, cfg.hidden)
        self.row_emb = nn.Parameter(torch.zeros(cfg.n_rows, cfg.hidden))
        self.blocks = nn.Sequential(*(_Block(cfg.hidden) for _ in range(cfg.blocks)))
        self.out_norm = nn.LayerNorm(cfg.hidden)
        self.head = nn.Linear(cfg.hidden, cfg.w_dim)
        nn.init.zeros_(self.head.weight)  # identity at initialisation
        nn.init.zeros_(self.head.bias)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        if rows.ndim != 3 or rows.shape[1:] != (self.cfg.n_rows, self.cfg.w_dim):
            raise ValueError(f"rows must be [B, {self.cfg.n_rows}, {self.cfg.w_dim}], got {list(rows.shape)}")
        x = (rows - self.w_avg) / self.w_std  # [B, R, D]
        h = self.blocks(self.inp(x) + self.row_emb)
        return (x + self.head(self.out_norm(h))) * self.w_std + self.w_avg

    def regularize_step(
        self, prev: torch.Tensor, new: torch.Tensor, alpha: float | torch.Tensor
    ) -> torch.Tensor:
        """``new + alpha * (c(new) - c(prev))`` with c(w) = R(w) - w; rows [B, R, D], alpha a number
        or a tensor broadcastable to [B, 1, 1]. One network pass over both."""
        if isinstance(alpha, (int, float)) and alpha == 0:
            return new
        c = self(torch.cat([prev, new])) - torch.cat([prev, new])
        c_prev, c_new = c[: len(prev)], c[len(prev) :]
        return new + alpha * (c_new - c_prev)

    def regularize_chain(
        self,
        start: torch.Tensor,
        prev: torch.Tensor,
        new: torch.Tensor,
        alpha: float | torch.Tensor,
        drift: float | torch.Tensor,
    ) -> torch.Tensor:
        """``regularize_step`` plus ``drift * (c(prev) - c(start))``: a step of a chain that began at
        ``start`` also takes back that share of the off-manifold part of the move so far (in the
        linear picture the part left by every step, (1 - alpha) of it, adds up along a chain;
        with ``drift`` > 0 it stays bounded, near (1 - alpha) / drift of one step's). Rows
        [B, R, D]; alpha and drift numbers or tensors broadcastable to [B, 1, 1]. One pass."""
        b = len(prev)
        x = torch.cat([start, prev, new])
        c = self(x) - x
        c_start, c_prev, c_new = c[:b], c[b : 2 * b], c[2 * b :]
        return new + alpha * (c_new - c_prev) + drift * (c_prev - c_start)


def perturb_latents(
    clean: torch.Tensor, w_std: torch.Tensor, gen: torch.Generator, outlier_prob: float = 0.25
) -> torch.Tensor:
    """Stage-1 corruption of clean rows [B, R, D]: Gaussian noise of a random size per row
    (0 to 1.5 std, log-uniform above 0.01; a quarter of the rows are left clean) plus, with
    ``outlier_prob``, a few dimensions pushed 2-6 std away (the spikes a drifting predictor makes)."""
    b, r, d = clean.shape
    dev = clean.device
    u = torch.rand(b, r, 1, generator=gen).to(dev)
    sigma = torch.where(u < 0.25, torch.zeros_like(u), 0.01 * (150.0 ** ((u - 0.25) / 0.75)))
    noisy = clean + sigma * w_std * torch.randn(b, r, d, generator=gen).to(dev)
    spike_rows = (torch.rand(b, r, 1, generator=gen) < outlier_prob).to(dev)
    spike_dims = (torch.rand(b, r, d, generator=gen) < 4.0 / d).to(dev)
    size = (2 + 4 * torch.rand(b, r, d, generator=gen)) * torch.sign(torch.randn(b, r, d, generator=gen))
    return noisy + (spike_rows & spike_dims) * size.to(dev) * w_std
