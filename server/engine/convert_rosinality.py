"""Rename rosinality/stylegan2-pytorch generator weights to NVIDIA's names (and livedrag's).

The checkpoint is ``torch.save({"g_ema": state_dict, ...})`` (``convert_weight.py`` adds
``latent_avg``; ``train.py`` adds ``g``, ``d``, optimiser states and ``args``). It is read with
``torch.load(weights_only=True)``; only ``argparse.Namespace`` is allowed beyond tensors and
containers.

Both code bases compute the same function, with these layout differences, all handled by
``rosinality_table``:
  * mapping: ``style.{i+1}`` (``style.0`` is the PixelNorm) -> ``mapping.fc{i}``; rosinality's
    EqualLinear scale ``lr_mul / sqrt(in)`` and bias ``* lr_mul`` equal NVIDIA's weight/bias gains,
    with lr_mul 0.01 (``lr_mlp``, not stored in the file);
  * modulated conv weights are stored as ``[1, out, in, k, k]`` -> ``[out, in, k, k]``; the
    style affine is ``conv.modulation``; the bias lives in ``activate`` (FusedLeakyReLU);
    the noise strength ``noise.weight`` is ``[1]`` -> ``[]``; fixed noise ``noises.noise_{i}``
    is ``[1, 1, r, r]`` -> ``noise_const [r, r]``;
  * ``to_rgb1`` / ``to_rgbs.{k}`` -> ``torgb`` (bias ``[1, 3, 1, 1]`` -> ``[3]``);
  * blur / upsample kernels are stored pre-multiplied by 4 (``make_kernel([1,3,3,1]) * 4``);
    NVIDIA keeps the normalised filter and applies the gain in ``upfirdn2d``. They are checked,
    then replaced by NVIDIA's ``resample_filter`` buffers;
  * channels per resolution: 512 up to 32 px, then ``2 ** (14 - log2 res) * channel_multiplier``,
    i.e. ``min(16384 * channel_multiplier // res, 512)``;
  * ``latent_avg`` -> ``mapping.w_avg``; when the file has none, it is estimated from the mapping
    network (10000 samples, seed 0), as rosinality's ``mean_latent`` does at run time.
"""

from __future__ import annotations

import argparse
import io
import math
import re
from collections.abc import Callable

import torch

from .checkpoint import CheckpointError, weights_only_refusal
from .convert_nvidia import plain
from .generator import GeneratorConfig, MappingNetwork, setup_filter

ROSINALITY = "rosinality-stylegan2-pytorch"
W_AVG_SAMPLES = 10000
_FILTER = setup_filter([1, 3, 3, 1])  # NVIDIA's resample_filter buffer (normalised)
_ROS_KERNEL = _FILTER * 4  # rosinality's Blur(upsample_factor=2) / Upsample kernel buffer

# Transform name -> (accepted source shape, conversion). Target shapes are checked afterwards
# against Generator(cfg) by check_state_dict.
_TRANSFORMS: dict[str, tuple[Callable[[tuple], bool], Callable[[torch.Tensor], torch.Tensor]]] = {
    "copy": (lambda s: True, lambda t: t),
    "squeeze0": (lambda s: len(s) >= 2 and s[0] == 1, lambda t: t[0]),  # [1, ...] -> [...]
    "scalar": (lambda s: s == (1,), lambda t: t.reshape([])),  # [1] -> []
    "rgb_bias": (
        lambda s: len(s) == 4 and s[0] == 1 and s[2:] == (1, 1),
        lambda t: t.reshape(-1),
    ),  # [1,3,1,1] -> [3]
    "noise": (lambda s: len(s) == 4 and s[:2] == (1, 1), lambda t: t[0, 0]),  # [1, 1, r, r] -> [r, r]
}


def rosinality_table(img_resolution: int, n_mlp: int) -> list[tuple[str, str | None, str]]:
    """The name mapping: rows of (livedrag/NVIDIA name, rosinality name or None = derived, transform)."""
    rows: list[tuple[str, str | None, str]] = []
    for i in range(n_mlp):
        rows += [
            (f"mapping.fc{i}.weight", f"style.{i + 1}.weight", "copy"),
            (f"mapping.fc{i}.bias", f"style.{i + 1}.bias", "copy"),
        ]

    def styled(dst: str, src: str, noise_idx: int, up: bool) -> None:
        nonlocal rows
        rows += [
            (f"{dst}.weight", f"{src}.conv.weight", "squeeze0"),
            (f"{dst}.affine.weight", f"{src}.conv.modulation.weight", "copy"),
            (f"{dst}.affine.bias", f"{src}.conv.modulation.bias", "copy"),
            (f"{dst}.noise_strength", f"{src}.noise.weight", "scalar"),
            (f"{dst}.noise_const", f"noises.noise_{noise_idx}", "noise"),
            (f"{dst}.bias", f"{src}.activate.bias", "copy"),
            (f"{dst}.resample_filter", f"{src}.conv.blur.kernel" if up else None, "filter"),
        ]

    def torgb(dst: str, src: str, up: bool) -> None:
        nonlocal rows
        rows += [
            (f"{dst}.weight", f"{src}.conv.weight", "squeeze0"),
            (f"{dst}.affine.weight", f"{src}.conv.modulation.weight", "copy"),
            (f"{dst}.affine.bias", f"{src}.conv.modulation.bias", "copy"),
            (f"{dst}.bias", f"{src}.bias", "rgb_bias"),
        ]

    rows.append(("synthesis.b4.const", "input.input", "squeeze0"))
    rows.append(("synthesis.b4.resample_filter", None, "filter"))
    styled("synthesis.b4.conv1", "conv1", 0, up=False)
    torgb("synthesis.b4.torgb", "to_rgb1", up=False)
    for k, res in enumerate(2**i for i in range(3, int(math.log2(img_resolution)) + 1)):
        b = f"synthesis.b{res}"
        # The skip path's upsampling kernel sits in rosinality's to_rgbs.{k}.upsample.
        rows.append((f"{b}.resample_filter", f"to_rgbs.{k}.upsample.kernel", "filter"))
        styled(f"{b}.conv0", f"convs.{2 * k}", 2 * k + 1, up=True)
        styled(f"{b}.conv1", f"convs.{2 * k + 1}", 2 * k + 2, up=False)
        torgb(f"{b}.torgb", f"to_rgbs.{k}", up=True)
    rows.append(("mapping.w_avg", None, "w_avg"))
    return rows


def _load(data: bytes) -> dict:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as e:  # weights_only refusals, corrupt archives
        raise CheckpointError(f"refused or unreadable torch checkpoint: {weights_only_refusal(e)}") from e
    if not isinstance(ckpt, dict) or "g_ema" not in ckpt:
        keys = sorted(map(str, ckpt)) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"torch checkpoint without 'g_ema' (found {keys}); expected rosinality stylegan2-pytorch"
        )
    sd = ckpt["g_ema"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError("'g_ema' is not a state dict of tensors")
    return ckpt


def _infer_config(sd: dict[str, torch.Tensor], name: str) -> GeneratorConfig:
    def need(key: str) -> torch.Tensor:
        if key not in sd:
            raise CheckpointError(f"missing key {key!r} in g_ema; not a rosinality StyleGAN2 generator")
        return sd[key]

    n_mlp = len({m.group(1) for k in sd if (m := re.fullmatch(r"style\.(\d+)\.weight", k))})
    w_dim = need("style.1.weight").shape[1]
    n_rgbs = len({m.group(1) for k in sd if (m := re.fullmatch(r"to_rgbs\.(\d+)\.conv\.weight", k))})
    img_resolution = 2 ** (n_rgbs + 2)
    channels = {4: need("conv1.conv.weight").shape[1]}
    for k in range(n_rgbs):
        channels[2 ** (k + 3)] = need(f"convs.{2 * k}.conv.weight").shape[1]
    channel_max = channels[4]
    for base in [c * r for r, c in channels.items()] + [32768]:
        if all(min(base // r, channel_max) == c for r, c in channels.items()):
            break
    else:
        raise CheckpointError(f"channels per resolution {channels} do not follow min(base // res, max)")
    cfg = GeneratorConfig(
        z_dim=w_dim,
        w_dim=w_dim,
        c_dim=0,
        img_resolution=img_resolution,
        img_channels=3,
        architecture="skip",
        channel_base=base,
        channel_max=channel_max,
        conv_clamp=None,
        num_fp16_res=0,
        mapping_layers=n_mlp,
        mapping_lr_multiplier=0.01,
        w_avg_beta=0.995,
        name=name,
    )
    return cfg


def estimate_w_avg(cfg: GeneratorConfig, sd: dict[str, torch.Tensor], n: int = W_AVG_SAMPLES) -> torch.Tensor:
    """Mean of mapping(z) over ``n`` standard-normal z drawn on the CPU from seed 0."""
    mapping = MappingNetwork(cfg)
    prefix = "mapping."
    mapping.load_state_dict(
        {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}, strict=False
    )
    z = torch.randn(n, cfg.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return mapping(z)[:, 0].mean(dim=0)


def read_rosinality(data: bytes, name: str = "") -> tuple[GeneratorConfig, dict[str, torch.Tensor], dict]:
    """Config, livedrag state dict and provenance of a rosinality checkpoint's bytes."""
    ckpt = _load(data)
    src = ckpt["g_ema"]
    cfg = _infer_config(src, name)
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []
    bad: list[str] = []
    w_avg_from = None
    for dst, key, how in rosinality_table(cfg.img_resolution, cfg.mapping_layers):
        if how == "filter":
            if key is not None:
                if key not in src:
                    missing.append(key)
                    continue
                used.add(key)
                if src[key].shape != _ROS_KERNEL.shape or not torch.allclose(src[key].float(), _ROS_KERNEL):
                    bad.append(f"{key} (blur kernel other than [1,3,3,1])")
            out[dst] = _FILTER.clone()
        elif how == "w_avg":
            continue
        elif key not in src:
            missing.append(key)
        else:
            used.add(key)
            accepts, fn = _TRANSFORMS[how]
            if accepts(tuple(src[key].shape)):
                out[dst] = fn(src[key])
            else:
                bad.append(f"{key} {list(src[key].shape)}")
    unexpected = sorted(set(src) - used)
    if missing or unexpected or bad:
        problems = []
        if missing:
            problems.append(f"missing keys in g_ema: {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            problems.append(
                f"unexpected keys in g_ema: {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
            )
        if bad:
            problems.append(f"unexpected shapes or values: {bad[:8]}")
        raise CheckpointError("; ".join(problems))
    latent_avg = ckpt.get("latent_avg")
    if isinstance(latent_avg, torch.Tensor):
        if latent_avg.numel() != cfg.w_dim:
            raise CheckpointError(
                f"latent_avg has shape {list(latent_avg.shape)}, expected {cfg.w_dim} values"
            )
        out["mapping.w_avg"] = latent_avg.reshape(cfg.w_dim).float()
        w_avg_from = "latent_avg"
    else:
        out["mapping.w_avg"] = estimate_w_avg(cfg, out)
        w_avg_from = f"estimated: mean of mapping(z) over {W_AVG_SAMPLES} z, seed 0"
    args = ckpt.get("args")
    info = {
        "format": ROSINALITY,
        "n_mlp": cfg.mapping_layers,
        "style_dim": cfg.w_dim,
        "size": cfg.img_resolution,
        "channel_base": cfg.channel_base,
        "channel_max": cfg.channel_max,
        "w_avg": w_avg_from,
        "args": plain(vars(args)) if isinstance(args, argparse.Namespace) else None,
    }
    return cfg, out, info
