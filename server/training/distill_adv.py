"""A light adversarial term for the distillation: a StyleGAN2 discriminator that tells renders
from generated images, so that the student draws crisp outlines instead of the blurred average
a regression loss settles on when it is unsure (SRGAN's and ESRGAN's recipe: pixel + perceptual +
a small adversarial weight). Logistic loss, lazy R1 on the renders, as in server/training/loop.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .discriminator import Discriminator, DiscriminatorConfig
from .loop import lazy_adam_params
from .loss import r1_penalty


class Critic:
    """The discriminator, its Adam and its lazy R1 schedule; ``g_loss`` for the generator's step,
    ``d_step`` after it."""

    def __init__(
        self,
        res: int,
        channel_base: int,
        channel_max: int,
        batch: int,
        device: torch.device,
        lr: float = 0.002,
        r1_interval: int = 16,
    ) -> None:
        cfg = DiscriminatorConfig(img_resolution=res, channel_base=channel_base, channel_max=channel_max)
        self.D = Discriminator(cfg).to(device).train().requires_grad_(False)
        d_lr, betas = lazy_adam_params(lr, 0.99, r1_interval)
        self.opt = torch.optim.Adam(self.D.parameters(), lr=d_lr, betas=betas, eps=1e-8)
        self.r1_gamma = 0.0002 * res**2 / batch  # NVIDIA's heuristic
        self.r1_interval = r1_interval
        self.steps = 0

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """Non-saturating generator loss through the frozen discriminator."""
        return F.softplus(-self.D(fake)).mean()

    def d_step(self, fake: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
        """One discriminator step on detached fakes and the renders (and R1 every r1_interval)."""
        self.D.requires_grad_(True)
        fake_logits, real_logits = self.D(fake.detach()), self.D(real)
        loss = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        stats = {
            "d_loss": loss.item(),
            "d_real": real_logits.mean().item(),
            "d_fake": fake_logits.mean().item(),
        }
        self.steps += 1
        if self.steps % self.r1_interval == 0:
            pen, logits = r1_penalty(self.D, real)
            r1 = pen.mean() * (self.r1_gamma / 2) * self.r1_interval + logits.mean() * 0
            self.opt.zero_grad(set_to_none=True)
            r1.backward()
            self.opt.step()
        self.D.requires_grad_(False)
        return stats

    def state_dict(self) -> dict:
        return {"D": self.D.state_dict(), "opt": self.opt.state_dict(), "steps": self.steps}

    def load_state_dict(self, d: dict) -> None:
        self.D.load_state_dict(d["D"])
        self.opt.load_state_dict(d["opt"])
        self.steps = int(d["steps"])
