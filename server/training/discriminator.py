"""StyleGAN2 discriminator (Karras et al., CVPR 2020): resnet blocks, minibatch standard deviation.

Parameter and buffer names follow NVIDIA's ``networks_stylegan2.py`` (``b64.fromrgb``, ``b64.conv0``,
``b64.conv1``, ``b64.skip``, ..., ``b4.conv``, ``b4.fc``, ``b4.out``), so a converted NVIDIA ``D``
state dict would load. Plain PyTorch, CPU and CUDA. Downsampling is NVIDIA's: a [1, 3, 3, 1]
low-pass FIR filter (a depthwise convolution, strided where the next conv is 1x1), then a
stride-2 convolution.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from server.engine.generator import LRELU_GAIN, FullyConnectedLayer, setup_filter


@dataclass(frozen=True)
class DiscriminatorConfig:
    img_resolution: int = 64  # input resolution, a power of two >= 8
    img_channels: int = 3
    channel_base: int = 2048  # channels at resolution r = min(channel_base // r, channel_max)
    channel_max: int = 128
    conv_clamp: float | None = None  # clamp conv outputs to +-this (NVIDIA: 256 with fp16 layers; None = off)
    mbstd_group_size: int = 4  # minibatch-std group size (clipped to the batch)
    mbstd_num_channels: int = 1  # minibatch-std feature channels

    def __post_init__(self) -> None:
        res = self.img_resolution
        if res < 8 or res & (res - 1):
            raise ValueError(f"img_resolution must be a power of two >= 8, got {res}")

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    @property
    def block_resolutions(self) -> list[int]:
        return [2**i for i in range(int(math.log2(self.img_resolution)), 2, -1)]

    def to_dict(self) -> dict:
        return asdict(self)


def downsample2d(x: torch.Tensor, f: torch.Tensor, padding: int, stride: int) -> torch.Tensor:
    """Pad by ``padding`` on every side, FIR-filter with ``f`` (symmetric), keep every ``stride``-th pixel."""
    c = x.shape[1]  # x: [N, C, H, W]
    if padding:
        x = F.pad(x, [padding] * 4)
    return F.conv2d(x, f.to(x.dtype)[None, None].expand(c, 1, -1, -1), groups=c, stride=stride)  # depthwise


class Conv2dLayer(nn.Module):
    """Equalised-learning-rate conv with optional 2x FIR downsampling, bias, activation and clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        down: int = 1,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        assert down in (1, 2)
        self.activation = activation
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter([1, 3, 3, 1]))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = LRELU_GAIN if activation == "lrelu" else 1.0
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        # lrelu(z) * g == lrelu(z * g) for g > 0: fold both gains into the weight and the bias, so the
        # layer is one convolution (bias fused) plus one in-place activation (CPU time is mostly memory).
        g = self.act_gain * gain
        w = (self.weight * (self.weight_gain * g)).to(x.dtype)
        b = (self.bias * g).to(x.dtype) if self.bias is not None else None
        if self.down == 1:
            x = F.conv2d(x, w, b, padding=self.padding)
        elif w.shape[-1] == 1:  # filter + subsample first (fewer channels), then the 1x1 conv
            x = F.conv2d(downsample2d(x, self.resample_filter, padding=1, stride=2), w, b)
        else:  # filter at full resolution, then the strided conv (NVIDIA conv2d_resample, down=2)
            x = downsample2d(x, self.resample_filter, padding=self.padding + 1, stride=1)
            x = F.conv2d(x, w, b, stride=2)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, 0.2, inplace=True)
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp * gain, self.conv_clamp * gain)
        return x


class DiscriminatorBlock(nn.Module):
    """One resolution of the resnet discriminator: (fromrgb) -> conv0 -> conv1 down, plus skip down."""

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        img_channels: int,
        conv_clamp: float | None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.register_buffer("resample_filter", setup_filter([1, 3, 3, 1]))
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(
                img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp
            )
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(
            tmp_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp
        )
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None) -> torch.Tensor:
        if self.in_channels == 0:
            x = self.fromrgb(img)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv0(x)
        x = self.conv1(x, gain=math.sqrt(0.5))
        return y + x


class MinibatchStdLayer(nn.Module):
    """Append the standard deviation across groups of samples as extra feature maps."""

    def __init__(self, group_size: int, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape  # [N, C, H, W]
        g = min(self.group_size, n)
        if n % g:
            raise ValueError(f"batch {n} is not a multiple of the minibatch-std group size {g}")
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)  # [G, M, F, c, H, W]: sample i is in group i % M
        y = y - y.mean(dim=0)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()  # [M, F, c, H, W]
        y = y.mean(dim=[2, 3, 4]).reshape(-1, f, 1, 1)  # [M, F, 1, 1]
        y = y.repeat(g, 1, h, w)  # [N, F, H, W]
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: minibatch std -> 3x3 conv -> fully connected -> one logit."""

    def __init__(self, channels: int, cfg: DiscriminatorConfig) -> None:
        super().__init__()
        self.mbstd = MinibatchStdLayer(cfg.mbstd_group_size, cfg.mbstd_num_channels)
        self.conv = Conv2dLayer(
            channels + cfg.mbstd_num_channels, channels, 3, activation="lrelu", conv_clamp=cfg.conv_clamp
        )
        self.fc = FullyConnectedLayer(channels * 4 * 4, channels, activation="lrelu")
        self.out = FullyConnectedLayer(channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.mbstd(x))
        return self.out(self.fc(x.flatten(1)))  # [N, 1]


class Discriminator(nn.Module):
    """Image [N, C, H, W] in about [-1, 1] -> realness logits [N, 1]."""

    def __init__(self, cfg: DiscriminatorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.block_resolutions = cfg.block_resolutions
        for res in self.block_resolutions:
            in_ch = cfg.channels(res) if res < cfg.img_resolution else 0
            block = DiscriminatorBlock(
                in_ch, cfg.channels(res), cfg.channels(res // 2), cfg.img_channels, cfg.conv_clamp
            )
            setattr(self, f"b{res}", block)
        self.b4 = DiscriminatorEpilogue(cfg.channels(4), cfg)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        r = self.cfg.img_resolution
        if img.ndim != 4 or img.shape[1:] != (self.cfg.img_channels, r, r):
            raise ValueError(f"images must be [N, {self.cfg.img_channels}, {r}, {r}], got {list(img.shape)}")
        x = None
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img)
        return self.b4(x)
