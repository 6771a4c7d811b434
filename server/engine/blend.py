"""Local blending of two latents under a mask (StyleMapGAN's local editing, adapted to StyleGAN2).

StyleMapGAN (Kim et al., CVPR 2021) edits locally by mixing two spatial style maps under a mask.
A StyleGAN2 W+ latent has no spatial extent, so the mixing happens on the synthesis network's
intermediate activations instead:

1. both latents are synthesised up to the block at ``feature_res`` (default: resolution / 4);
2. that block's features and the skip-architecture RGB image are composited with the region
   mask, feathered by a Gaussian of ``feather`` pixels and area-resampled to ``feature_res``;
3. synthesis continues from the composite twice, with the later W+ rows of each latent, and the
   two results are composited at full resolution with the same feathered mask (inside: the
   source's fine styles, outside: the base's), so seams are blended at a coarse scale where the
   generator makes them coherent.

The result is an image, not a latent. ``blend_session`` then runs a ``ProjectSession`` from the
base latent toward it, so the edit ends as an ordinary, draggable W+ latent. The returned weight
asks the projection to match everything, with half weight in the feathered band where the
composite is least trustworthy.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .generator import Generator, SynthesisBlock, to_uint8
from .perceptual import PerceptualDistance
from .project import ProjectOptions, ProjectSession


def _block_ws_index(G: Generator) -> dict[int, tuple[int, int]]:
    """Block resolution -> (first W+ row, number of rows), as SynthesisNetwork.forward slices them."""
    out, idx = {}, 0
    for res in G.synthesis.block_resolutions:
        block: SynthesisBlock = getattr(G.synthesis, f"b{res}")
        out[res] = (idx, block.num_conv + block.num_torgb)
        idx += block.num_conv
    return out


def _run_blocks(
    G: Generator,
    ws: torch.Tensor,
    x: torch.Tensor | None,
    img: torch.Tensor | None,
    resolutions: list[int],
    noise_mode: str = "const",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the synthesis blocks of ``resolutions`` (in order) from features ``x`` and skip image ``img``."""
    index = _block_ws_index(G)
    for res in resolutions:
        start, n = index[res]
        block: SynthesisBlock = getattr(G.synthesis, f"b{res}")
        x, img = block(x, img, ws.narrow(1, start, n), noise_mode, torch.float32)
    return x, img


def feathered_mask(region: np.ndarray, feather: float) -> torch.Tensor:
    """bool [H, W] -> float [1, 1, H, W] in [0, 1], blurred by a Gaussian of std ``feather`` pixels."""
    m = torch.from_numpy(np.asarray(region, dtype=np.float32))[None, None]
    if feather <= 0:
        return m
    r = max(1, math.ceil(3 * feather))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / feather) ** 2)
    k = k / k.sum()
    m = F.pad(m, (r, r, r, r), mode="replicate")
    m = F.conv2d(m, k.view(1, 1, 1, -1))
    m = F.conv2d(m, k.view(1, 1, -1, 1))
    return m.clamp(0, 1)


@torch.no_grad()
def blend_target(
    G: Generator,
    w_base: torch.Tensor,
    w_source: torch.Tensor,
    region: np.ndarray,
    feature_res: int | None = None,
    feather: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Composite ``w_source`` into ``w_base`` inside ``region``: (target uint8 [H, W, 3], weight [H, W]).

    ``region`` is bool [H, W] (True = take the source); ``feather`` defaults to resolution / 32
    pixels; ``feature_res`` to resolution / 4 (at least 8).
    """
    res = G.img_resolution
    region = np.asarray(region)
    if region.shape != (res, res):
        raise ValueError(f"region must be bool [{res}, {res}], got {list(region.shape)}")
    region = region.astype(bool)
    if not region.any():
        raise ValueError("region is empty: select the part of the source to blend in")
    blocks = G.synthesis.block_resolutions
    if feature_res is None:
        feature_res = max(min(8, res), res // 4)
    if feature_res not in blocks:
        raise ValueError(f"feature_res must be one of {blocks}, got {feature_res}")
    feather = res / 32 if feather is None else float(feather)
    if feather < 0:
        raise ValueError(f"feather must be >= 0, got {feather}")
    dev = G.mapping.w_avg.device
    ws = torch.cat([G.expand_ws(w_base.to(dev).float()), G.expand_ws(w_source.to(dev).float())])
    if ws.shape[0] != 2:
        raise ValueError("w_base and w_source must each be one latent [1, num_ws, w_dim]")
    m_full = feathered_mask(region, feather).to(dev)  # [1, 1, H, W]
    head = [r for r in blocks if r <= feature_res]
    tail = [r for r in blocks if r > feature_res]
    x, img = _run_blocks(G, ws, None, None, head)  # both latents in one batch
    m = F.interpolate(m_full, size=(feature_res, feature_res), mode="area")
    x_mix = m * x[1:] + (1 - m) * x[:1]
    img_mix = None if img is None else m * img[1:] + (1 - m) * img[:1]
    if tail:
        # continue the composite with each latent's later rows, then composite the outputs
        x2 = x_mix.expand(2, -1, -1, -1)
        img2 = None if img_mix is None else img_mix.expand(2, -1, -1, -1)
        _, out = _run_blocks(G, ws, x2, img2, tail)
        out = m_full * out[1:] + (1 - m_full) * out[:1]
    else:
        out = img_mix
    target = to_uint8(out)[0]
    band = (m_full[0, 0] > 0.02) & (m_full[0, 0] < 0.98)
    weight = torch.where(band, 0.5, 1.0).cpu().numpy().astype(np.float32)
    return target, weight


def blend_session(
    G: Generator,
    w_base: torch.Tensor,
    w_source: torch.Tensor,
    region: np.ndarray,
    options: ProjectOptions = ProjectOptions(max_steps=60),
    perceptual: PerceptualDistance | None = None,
    feature_res: int | None = None,
    feather: float | None = None,
) -> ProjectSession:
    """A ``ProjectSession`` from ``w_base`` toward ``blend_target(...)``: the blend as a W+ latent."""
    target, weight = blend_target(G, w_base, w_source, region, feature_res=feature_res, feather=feather)
    return ProjectSession(G, target, w_base, options, weight=weight, perceptual=perceptual)
