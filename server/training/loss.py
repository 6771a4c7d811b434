"""StyleGAN2 losses: non-saturating logistic loss, R1 and path-length regularisation.

As in NVIDIA's stylegan2-ada-pytorch ``training/loss.py`` (StyleGAN2Loss): the regularisers are
"lazy" (run every ``interval`` minibatches with their loss multiplied by the interval) and the
caller corrects the optimiser's learning rate and betas (see ``loop.lazy_adam_params``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from server.engine.generator import Generator


def mapping_with_mixing(
    G: Generator, z: torch.Tensor, mixing_prob: float, update_emas: bool = False
) -> torch.Tensor:
    """W+ [N, num_ws, w_dim] from z [N, z_dim]; with probability ``mixing_prob`` per sample, the rows
    from a random cutoff on come from a second z (style mixing regularisation)."""
    ws = G.mapping(z, update_emas=update_emas)
    if mixing_prob > 0:
        n, num_ws = ws.shape[:2]
        cutoff = torch.randint(1, num_ws, [], device=ws.device)
        cutoff = torch.where(
            torch.rand([], device=ws.device) < mixing_prob, cutoff, torch.full_like(cutoff, num_ws)
        )
        ws2 = G.mapping(torch.randn_like(z))
        rows = torch.arange(num_ws, device=ws.device)[None, :, None]  # [1, num_ws, 1]
        ws = torch.where(rows < cutoff, ws, ws2)
    return ws


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss: softplus(-D(G(z))), the non-saturating logistic loss."""
    return F.softplus(-fake_logits).mean()


def d_logistic(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Discriminator loss terms (real, fake): softplus(-D(x)) and softplus(D(G(z)))."""
    return F.softplus(-real_logits).mean(), F.softplus(fake_logits).mean()


def r1_penalty(D: torch.nn.Module, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample squared gradient norm of D at the real images [N], and the logits [N, 1]."""
    real = real.detach().requires_grad_(True)
    logits = D(real)
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return grad.square().sum(dim=[1, 2, 3]), logits


class PathLengthRegularizer:
    """Path-length penalty (StyleGAN2 section 3.2): keeps |J_w^T y| close to its running mean."""

    def __init__(self, decay: float = 0.01) -> None:
        self.decay = decay
        self.pl_mean = torch.zeros([])

    def __call__(self, G: Generator, z: torch.Tensor, mixing_prob: float, noise_mode: str) -> torch.Tensor:
        """Per-sample penalty [N]; updates the running mean."""
        ws = mapping_with_mixing(G, z, mixing_prob)
        img, _ = G.synthesis(ws, noise_mode=noise_mode)
        h, w = img.shape[2:]
        noise = torch.randn_like(img) / (h * w) ** 0.5
        (grad,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        lengths = grad.square().sum(2).mean(1).sqrt()  # [N]
        self.pl_mean = self.pl_mean.to(lengths.device).lerp(lengths.mean().detach(), self.decay)
        return (lengths - self.pl_mean).square()

    def state_dict(self) -> dict:
        return {"pl_mean": self.pl_mean.detach().cpu()}

    def load_state_dict(self, d: dict) -> None:
        self.pl_mean = d["pl_mean"].clone()
