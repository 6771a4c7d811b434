"""Perceptual distance on the SynthFaces landmark detector: an LPIPS-like score of the project's own.

This is NOT LPIPS and uses no VGG/AlexNet weights: the feature network is the project's own
SynthFaces landmark detector (``server/assets/landmarks.safetensors``, trained by
scripts/train_landmarks.py on rendered faces, see docs/synthfaces.md). The recipe follows LPIPS
without its learned per-channel weights (Zhang et al., CVPR 2018, "lin" layers set to 1):

* both images go through the detector's encoder trunk (``LandmarkDetector._trunk``: features at
  1/2, 1/4 and 1/8 of the input size, after ReLU);
* every feature vector is normalised to unit length over channels;
* the distance of one layer is the squared difference summed over channels, averaged over space;
* the score is the mean over the layers.

Two identical images score 0; the score is differentiable with respect to both images, and the
network is frozen (no parameter requires a gradient, BatchNorm in eval mode). Images of another
size are resized (antialiased bilinear, differentiable) to the detector's input size first.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from server.synthfaces.detector import LandmarkDetector, load_detector


class PerceptualDistance(nn.Module):
    """``(img_a, img_b)`` float [N, 3, H, W] in [-1, 1] -> distance [N] (0 for identical images)."""

    def __init__(
        self,
        detector: LandmarkDetector | None = None,
        layers: tuple[int, ...] = (0, 1, 2),
        path: str | Path | None = None,
    ) -> None:
        super().__init__()
        if detector is None:
            detector = load_detector(path).model
        bad = [i for i in layers if i not in (0, 1, 2)]
        if not layers or bad:
            raise ValueError(f"layers must be a non-empty subset of (0, 1, 2), got {layers}")
        self.net = detector.eval().requires_grad_(False)
        self.layers = tuple(layers)
        self.input_size = int(detector.cfg.input_size)

    def train(self, mode: bool = True) -> PerceptualDistance:
        super().train(mode)
        self.net.eval()  # always frozen: BatchNorm uses its stored statistics
        return self

    def features(self, img: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised (over channels) features of the chosen trunk layers."""
        if img.ndim != 4 or img.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W] in [-1, 1], got {list(img.shape)}")
        x = (img.float() + 1.0) * 0.5  # the detector takes [0, 1]
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(
                x,
                size=(self.input_size, self.input_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        feats = self.net._trunk(x)
        return [feats[i] * (feats[i].square().sum(1, keepdim=True) + 1e-10).rsqrt() for i in self.layers]

    def forward(self, img_a: torch.Tensor, img_b: torch.Tensor) -> torch.Tensor:
        if img_a.shape != img_b.shape:
            raise ValueError(f"image shapes differ: {list(img_a.shape)} vs {list(img_b.shape)}")
        n = img_a.shape[0]
        both = self.features(torch.cat([img_a, img_b]))  # one pass for both images
        total = img_a.new_zeros(n, dtype=torch.float32)
        for f in both:
            fa, fb = f[:n], f[n:]
            total = total + (fa - fb).square().sum(1).mean(dim=(1, 2))
        return total / len(both)

    def distance_to(self, img: torch.Tensor, target_feats: list[torch.Tensor]) -> torch.Tensor:
        """Distance of ``img`` to precomputed ``features(target)`` (saves the target's pass each step)."""
        feats = self.features(img)
        total = img.new_zeros(img.shape[0], dtype=torch.float32)
        for fa, fb in zip(feats, target_feats, strict=True):
            total = total + (fa - fb).square().sum(1).mean(dim=(1, 2))
        return total / len(feats)


_SHARED: dict[str, PerceptualDistance] = {}


def shared_perceptual(device: str | torch.device = "cpu") -> PerceptualDistance:
    """One frozen ``PerceptualDistance`` per device (the shipped detector), reused by every session."""
    key = str(torch.device(device))
    if key not in _SHARED:
        _SHARED[key] = PerceptualDistance().to(key)
    return _SHARED[key]
