"""StyleGAN2 generator (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", CVPR 2020).

One file, readable top to bottom: primitives, modulated convolution, layers, blocks, mapping,
synthesis, generator. Parameter and buffer names and shapes match NVIDIA's
``networks_stylegan2.py`` (stylegan2-ada-pytorch and the stylegan3 repository), so the ``G_ema``
state dict of their checkpoints loads with ``load_state_dict(strict=True)`` once converted by
``server.engine.convert``. Everything is plain PyTorch (NVIDIA's upfirdn2d / bias_act reference
paths), so it runs on the CPU and on CUDA without compiling anything.

Extras used by the drag editor:
  * ``synthesis(ws, feature_blocks=(res,...))`` returns the output of chosen synthesis blocks
    from the same forward pass (DragGAN reads the 6th block, 128x128 for models of 256 px and up);
  * W (``[N, w_dim]``) or W+ (``[N, num_ws, w_dim]``) input;
  * truncation toward ``mapping.w_avg``; noise modes ``const`` / ``random`` / ``none``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class GeneratorConfig:
    z_dim: int = 512  # input latent size (0 allowed for purely conditional models)
    w_dim: int = 512  # intermediate latent size
    c_dim: int = 0  # conditioning label size (0 = unconditional)
    img_resolution: int = 256  # output resolution, a power of two >= 4
    img_channels: int = 3  # output channels
    architecture: str = "skip"  # synthesis output architecture: "skip" or "resnet"
    channel_base: int = 32768  # channels per block = min(channel_base // res, channel_max)
    channel_max: int = 512
    conv_clamp: float | None = 256.0  # clamp conv outputs to +-this (None = off)
    num_fp16_res: int = 0  # kept for checkpoint fidelity; dtype is chosen at run time instead
    mapping_layers: int = 8  # number of FC layers in the mapping network
    mapping_lr_multiplier: float = 0.01  # learning-rate multiplier of the mapping network
    embed_features: int | None = None  # label embedding size (None = w_dim)
    layer_features: int | None = None  # mapping hidden size (None = w_dim)
    w_avg_beta: float = 0.998  # decay of the running w average used for truncation
    name: str = ""  # free-form model name (e.g. "synthfaces-64")
    extra: dict = field(default_factory=dict, compare=False, hash=False)  # provenance, not used by code

    def __post_init__(self) -> None:
        res = self.img_resolution
        if res < 4 or res & (res - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, got {res}")
        if self.architecture not in ("skip", "resnet"):
            raise ValueError(f"architecture must be 'skip' or 'resnet', got {self.architecture!r}")
        if self.z_dim == 0 and self.c_dim == 0:
            raise ValueError("z_dim and c_dim cannot both be 0")

    @property
    def block_resolutions(self) -> list[int]:
        return [2**i for i in range(2, int(math.log2(self.img_resolution)) + 1)]

    @property
    def num_ws(self) -> int:
        return 2 * int(math.log2(self.img_resolution)) - 2

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GeneratorConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown GeneratorConfig fields: {unknown}")
        return cls(**d)


# ----------------------------------------------------------------------------------------------
# Primitives (pure-PyTorch versions of NVIDIA's bias_act and upfirdn2d reference paths)

LRELU_GAIN = math.sqrt(2.0)


def setup_filter(taps: list[float]) -> torch.Tensor:
    """Separable FIR taps -> normalised 2-D filter, as NVIDIA's ``upfirdn2d.setup_filter``."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None,
    act: str = "linear",
    gain: float = 1.0,
    clamp: float | None = None,
) -> torch.Tensor:
    """Add a per-channel bias (dim 1), apply the activation, scale by gain, clamp."""
    if b is not None:
        x = x + b.to(x.dtype).reshape([1, -1] + [1] * (x.ndim - 2))
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2)
    elif act != "linear":
        raise ValueError(f"unknown activation {act!r}")
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def upfirdn2d(
    x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1, padding=(0, 0, 0, 0), gain: float = 1.0
) -> torch.Tensor:
    """Upsample (zero insertion), pad, FIR filter, downsample. ``padding`` is (x0, x1, y0, y1)."""
    n, c, h, w = x.shape  # [N, C, H, W]
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    px0, px1, py0, py1 = padding
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]
    f = (f * gain).to(x.dtype).flip([0, 1])  # true convolution; the binomial filter is symmetric
    weight = f[None, None].repeat(c, 1, 1, 1)  # depthwise [C, 1, fh, fw]
    x = F.conv2d(x, weight, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    fw = f.shape[-1]
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    return upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up * up)


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def modulated_conv2d(
    x: torch.Tensor,  # [N, I, H, W]
    weight: torch.Tensor,  # [O, I, k, k]
    styles: torch.Tensor,  # [N, I]
    noise: torch.Tensor | None = None,  # [N, 1, H', W'] or broadcastable
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
) -> torch.Tensor:
    """Modulate input channels by styles, convolve with the shared weight, demodulate outputs.

    Equivalent to NVIDIA's fused grouped convolution; this "scale activations" form runs one
    convolution with a shared weight for the whole batch, which is what CPUs and GPUs like.
    """
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    w = weight.to(x.dtype)
    s = styles.to(x.dtype)
    if demodulate and x.dtype in (torch.float16, torch.bfloat16):
        # Pre-normalise to avoid fp16 overflow (NVIDIA does the same); demodulation cancels it.
        w = w * (1 / math.sqrt(in_ch * kh * kw) / w.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        s = s / s.norm(float("inf"), dim=1, keepdim=True)
    dcoefs = None
    if demodulate:
        wm = w.unsqueeze(0) * s.reshape(n, 1, -1, 1, 1)  # [N, O, I, k, k]
        dcoefs = (wm.float().square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().to(x.dtype)  # [N, O]
    x = x * s.reshape(n, -1, 1, 1)
    if up == 1:
        x = F.conv2d(x, w, padding=padding)
    else:
        # Transposed conv (stride 2) then the FIR low-pass: NVIDIA's conv2d_resample fast path.
        assert up == 2 and resample_filter is not None
        x = F.conv_transpose2d(x, w.transpose(0, 1), stride=2)
        fw = resample_filter.shape[-1]
        p0 = (fw + up - 1) // 2 + padding - (kw - 1)
        p1 = (fw - up) // 2 + padding - (kw - up)
        x = upfirdn2d(x, resample_filter, padding=(p0, p1, p0, p1), gain=up * up)
    if dcoefs is not None:
        x = x * dcoefs.reshape(n, -1, 1, 1)
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


# ----------------------------------------------------------------------------------------------
# Layers


class FullyConnectedLayer(nn.Module):
    """Equalised-learning-rate linear layer (gains recomputed, never stored)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t())
        return bias_act(x, b, act=self.activation, gain=LRELU_GAIN if self.activation == "lrelu" else 1.0)


class Conv2dLayer(nn.Module):
    """Plain equalised conv, used for the resnet skip path (1x1, up 2, no bias)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        up: int = 1,
        resample_filter: tuple[float, ...] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.up = up
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        k = w.shape[-1]
        if self.up > 1:
            if k == 1:  # 1x1 conv then upsample, as NVIDIA's conv2d_resample fast path
                x = upsample2d(F.conv2d(x, w), self.resample_filter, up=self.up)
            else:
                x = F.conv_transpose2d(x, w.transpose(0, 1), stride=self.up)
                fw = self.resample_filter.shape[-1]
                p0 = (fw + self.up - 1) // 2 + self.padding - (k - 1)
                p1 = (fw - self.up) // 2 + self.padding - (k - self.up)
                x = upfirdn2d(x, self.resample_filter, padding=(p0, p1, p0, p1), gain=self.up**2)
        else:
            x = F.conv2d(x, w, padding=self.padding)
        return bias_act(x, self.bias, gain=gain)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv + noise + bias + lrelu, optionally upsampling by 2."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        up: int = 1,
        conv_clamp: float | None = None,
        resample_filter: tuple[float, ...] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 3, 3]))
        self.register_buffer("noise_const", torch.randn([resolution, resolution]))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const", gain: float = 1.0
    ) -> torch.Tensor:
        styles = self.affine(w)  # [N, I]
        noise = None
        if noise_mode == "random":
            noise = (
                torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device)
                * self.noise_strength
            )
        elif noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        elif noise_mode != "none":
            raise ValueError(f"noise_mode must be 'const', 'random' or 'none', got {noise_mode!r}")
        x = modulated_conv2d(
            x, self.weight, styles, noise=noise, up=self.up, padding=1, resample_filter=self.resample_filter
        )
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, act="lrelu", gain=LRELU_GAIN * gain, clamp=clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to image channels, no demodulation."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None
    ) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


# ----------------------------------------------------------------------------------------------
# Blocks and networks


class SynthesisBlock(nn.Module):
    """One resolution: (const | conv0 up) -> conv1 -> torgb, with skip or resnet wiring."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        architecture: str,
        conv_clamp: float | None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.is_last = is_last
        self.architecture = architecture
        self.register_buffer("resample_filter", setup_filter([1, 3, 3, 1]))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(
                in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp
            )
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2)

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        noise_mode: str,
        dtype: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        w_iter = iter(ws.unbind(dim=1))  # ws: [N, num_conv + num_torgb, w_dim]
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode)
        elif self.architecture == "resnet":
            x = x.to(dtype)
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, gain=math.sqrt(0.5))
            x = y + x
        else:
            x = x.to(dtype)
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter)).float()
            img = img + y if img is not None else y
        return x, img


class SynthesisNetwork(nn.Module):
    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.w_dim = cfg.w_dim
        self.img_resolution = cfg.img_resolution
        self.block_resolutions = cfg.block_resolutions
        self.num_ws = 0
        for res in self.block_resolutions:
            in_ch = cfg.channels(res // 2) if res > 4 else 0
            block = SynthesisBlock(
                in_ch,
                cfg.channels(res),
                cfg.w_dim,
                res,
                cfg.img_channels,
                is_last=(res == cfg.img_resolution),
                architecture=cfg.architecture,
                conv_clamp=cfg.conv_clamp,
            )
            self.num_ws += block.num_conv
            if res == cfg.img_resolution:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)
        assert self.num_ws == cfg.num_ws

    def forward(
        self,
        ws: torch.Tensor,  # [N, num_ws, w_dim]
        noise_mode: str = "const",
        feature_blocks: tuple[int, ...] = (),
        dtype: torch.dtype = torch.float32,
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Image [N, C, H, W] (float32, about [-1, 1]) and the outputs of the requested blocks."""
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        unknown = set(feature_blocks) - set(self.block_resolutions)
        if unknown:
            raise ValueError(f"feature_blocks {sorted(unknown)} not among {self.block_resolutions}")
        ws = ws.to(dtype)
        x = img = None
        feats: dict[int, torch.Tensor] = {}
        w_idx = 0
        for res in self.block_resolutions:
            block: SynthesisBlock = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, noise_mode, dtype)
            if res in feature_blocks:
                feats[res] = x
        return img, feats


class MappingNetwork(nn.Module):
    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = cfg.z_dim, cfg.c_dim, cfg.w_dim, cfg.num_ws
        self.w_avg_beta = cfg.w_avg_beta
        embed = cfg.embed_features if cfg.embed_features is not None else cfg.w_dim
        hidden = cfg.layer_features if cfg.layer_features is not None else cfg.w_dim
        if cfg.c_dim == 0:
            embed = 0
        if cfg.z_dim == 0 and cfg.c_dim == 0:
            raise ValueError("mapping needs z_dim or c_dim")
        feats = [cfg.z_dim + embed] + [hidden] * (cfg.mapping_layers - 1) + [cfg.w_dim]
        if cfg.c_dim > 0:
            self.embed = FullyConnectedLayer(cfg.c_dim, embed)
        for i in range(cfg.mapping_layers):
            layer = FullyConnectedLayer(
                feats[i], feats[i + 1], activation="lrelu", lr_multiplier=cfg.mapping_lr_multiplier
            )
            setattr(self, f"fc{i}", layer)
        self.register_buffer("w_avg", torch.zeros([cfg.w_dim]))

    def forward(
        self,
        z: torch.Tensor | None,  # [N, z_dim]
        c: torch.Tensor | None = None,  # [N, c_dim]
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        """Return W+ latents [N, num_ws, w_dim]."""
        x = None
        if self.z_dim > 0:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise ValueError(f"z must be [N, {self.z_dim}], got {None if z is None else list(z.shape)}")
            x = normalize_2nd_moment(z.float())
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                raise ValueError(f"this model is conditional: c must be [N, {self.c_dim}]")
            y = normalize_2nd_moment(self.embed(c.float()))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for i in range(self.cfg.mapping_layers):
            x = getattr(self, f"fc{i}")(x)
        if update_emas:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])  # [N, num_ws, w_dim]
        if truncation_psi != 1:
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x[:, :cut] = self.w_avg.lerp(x[:, :cut], truncation_psi)
        return x


class Generator(nn.Module):
    """StyleGAN2 generator: ``mapping`` (z, c -> W+) and ``synthesis`` (W+ -> image)."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.z_dim, self.c_dim, self.w_dim = cfg.z_dim, cfg.c_dim, cfg.w_dim
        self.img_resolution, self.img_channels = cfg.img_resolution, cfg.img_channels
        self.synthesis = SynthesisNetwork(cfg)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(cfg)

    # -- latents --------------------------------------------------------------------------------
    def z_from_seed(self, seed: int) -> torch.Tensor:
        """The z of a seed, drawn on the CPU so a seed names the same image on every machine."""
        return z_from_seed(seed, self.z_dim)

    def ws_from_seed(
        self, seed: int, truncation_psi: float = 0.7, c: torch.Tensor | None = None
    ) -> torch.Tensor:
        dev = self.mapping.w_avg.device
        return self.mapping(self.z_from_seed(seed).to(dev), c, truncation_psi=truncation_psi)

    def expand_ws(self, w: torch.Tensor) -> torch.Tensor:
        """Accept W ``[N, w_dim]`` or W+ ``[N, num_ws, w_dim]``; return W+."""
        if w.ndim == 2 and w.shape[1] == self.w_dim:
            return w.unsqueeze(1).repeat(1, self.num_ws, 1)
        if w.ndim == 3 and w.shape[1:] == (self.num_ws, self.w_dim):
            return w
        n, d = self.num_ws, self.w_dim
        raise ValueError(f"latent must be [N, {d}] (W) or [N, {n}, {d}] (W+), got {list(w.shape)}")

    # -- forward --------------------------------------------------------------------------------
    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
        update_emas: bool = False,
    ) -> torch.Tensor:
        ws = self.mapping(
            z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas
        )
        img, _ = self.synthesis(ws, noise_mode=noise_mode)
        return img

    def synthesize(
        self,
        w: torch.Tensor,
        noise_mode: str = "const",
        feature_blocks: tuple[int, ...] = (),
        dtype: torch.dtype = torch.float32,
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """W or W+ -> (image [N, C, H, W] in about [-1, 1], {block resolution: features})."""
        return self.synthesis(
            self.expand_ws(w), noise_mode=noise_mode, feature_blocks=feature_blocks, dtype=dtype
        )

    def default_feature_block(self) -> int:
        """DragGAN's feature block: the 6th synthesis block (b128 for 256 px and up), else the last."""
        blocks = self.synthesis.block_resolutions
        return blocks[min(5, len(blocks) - 1)]


def z_from_seed(seed: int, z_dim: int) -> torch.Tensor:
    """``numpy.random.RandomState(seed).randn(1, z_dim)`` as in NVIDIA's and DragGAN's tools."""
    if not (0 <= int(seed) < 2**32):
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    return torch.from_numpy(np.random.RandomState(int(seed)).randn(1, z_dim).astype(np.float32))


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> uint8 [N, H, W, C] on the CPU."""
    x = (img.detach().float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()
