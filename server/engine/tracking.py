"""DragGAN's feature-space pieces as pure functions: point tracking, motion supervision, mask term.

Pan et al., "Drag Your GAN" (SIGGRAPH 2023), section 3. DragGAN resizes the chosen synthesis
block's features bilinearly (align_corners=False) to the image size and works on that map F.
Here ``FeatureField`` gives exactly the values of F at the pixels the method reads, sampled
from the block's own (smaller) map, so F is never materialised: for FFHQ-512 that is a
[256, 512, 512] tensor (268 MB, plus its gradient) per step, and resizing it and its backward
cost about a second per step on two CPU cores. The result equals the resize-then-read path up
to float rounding (tested). Only the mask term needs the full map (``FeatureField.full``).

Points are float tensors [K, 2] of (x, y) image pixels. Every handle is processed at once (no
Python loop over handles, no device synchronisation), so callers can batch sessions and read
results back once per step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

# DragGAN's motion supervision leaves a handle alone once it is this close to its target (px, at
# any resolution); the predictor asks the same handles to move (``PredictSession``).
MOTION_MIN_DISTANCE = 1.0


def resize_features(feats: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Resize each [N, C_i, h, w] map bilinearly (align_corners=False) to ``size`` and concatenate.

    Returns float32 [N, sum C_i, H, W] (DragGAN's F). Maps already at ``size`` are used as they are.
    """
    out = []
    for f in feats:
        f = f.float()
        if tuple(f.shape[-2:]) != tuple(size):
            f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
        out.append(f)
    return out[0] if len(out) == 1 else torch.cat(out, dim=1)


class FeatureField:
    """F (the block maps resized to the image and concatenated) read at chosen points.

    ``maps``: one or more [1, C_i, h_i, w_i] feature maps of one image (gradients kept);
    ``size``: the image size (H, W). A map at the image size is read directly.
    """

    def __init__(
        self, maps: Sequence[torch.Tensor] | torch.Tensor, size: tuple[int, int] | None = None
    ) -> None:
        if isinstance(maps, torch.Tensor):
            maps = [maps]
        self.maps = [m.float() for m in maps]
        if any(m.ndim != 4 or m.shape[0] != 1 for m in self.maps):
            raise ValueError(f"feature maps must be [1, C, h, w], got {[list(m.shape) for m in self.maps]}")
        self.size = tuple(size) if size is not None else tuple(self.maps[0].shape[-2:])
        self.channels = sum(m.shape[1] for m in self.maps)
        self.device = self.maps[0].device

    def detach(self) -> FeatureField:
        return FeatureField([m.detach() for m in self.maps], self.size)

    def full(self) -> torch.Tensor:
        """The whole map F [1, C, H, W] (what DragGAN computes; only the mask term needs it)."""
        return resize_features(self.maps, self.size)

    def at_pixels(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """F at integer pixels (x, y) (long tensors of one shape, inside the image) -> [C, *shape]."""
        h_img, w_img = self.size
        shape = x.shape
        x, y = x.reshape(-1), y.reshape(-1)
        out = []
        for m in self.maps:
            c, h, w = m.shape[1:]
            if (h, w) == (h_img, w_img):
                out.append(m[0].reshape(c, h * w)[:, y * w + x])
            else:
                # pixel centre of the resized map -> normalised coordinates; border padding
                # reproduces interpolate's clamping of source indices at the edges
                gx = (2 * x.to(m.dtype) + 1) / w_img - 1
                gy = (2 * y.to(m.dtype) + 1) / h_img - 1
                grid = torch.stack([gx, gy], dim=-1)[None, None]  # [1, 1, N, 2]
                out.append(
                    F.grid_sample(m, grid, mode="bilinear", padding_mode="border", align_corners=False)[
                        0, :, 0
                    ]
                )
        f = out[0] if len(out) == 1 else torch.cat(out, dim=0)
        return f.reshape(self.channels, *shape)

    def bilinear(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """F at real-valued points, as ``grid_sample(F, align_corners=True)`` with zeros outside.

        x, y float tensors of one shape -> [C, *shape].
        """
        h_img, w_img = self.size
        shape = x.shape
        x, y = x.reshape(-1).float(), y.reshape(-1).float()
        out = []
        for m in self.maps:
            if tuple(m.shape[-2:]) == (h_img, w_img):
                grid = torch.stack([x / (w_img - 1) * 2 - 1, y / (h_img - 1) * 2 - 1], dim=-1)[None, None]
                out.append(
                    F.grid_sample(m, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0, :, 0]
                )
                continue
            # bilinear interpolation of the resized map from its four neighbouring pixels
            one = FeatureField([m], self.size)
            x0, y0 = x.floor(), y.floor()
            acc = 0
            for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
                cx, cy = x0 + dx, y0 + dy
                wgt = (1 - (x - cx).abs()) * (1 - (y - cy).abs())
                inside = (cx >= 0) & (cx <= w_img - 1) & (cy >= 0) & (cy <= h_img - 1)
                v = one.at_pixels(cx.clamp(0, w_img - 1).long(), cy.clamp(0, h_img - 1).long())
                acc = acc + v * (wgt * inside)[None]
            out.append(acc)
        f = out[0] if len(out) == 1 else torch.cat(out, dim=0)
        return f.reshape(self.channels, *shape)


def _field(feat: FeatureField | torch.Tensor) -> FeatureField:
    return feat if isinstance(feat, FeatureField) else FeatureField(feat)


def features_at(feat: FeatureField | torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Feature vectors [K, C] at the rounded pixel positions of ``points`` [K, 2] (x, y).

    DragGAN's templates f_i = F0(p_i) are read at the rounded handle position.
    """
    field = _field(feat)
    h, w = field.size
    xy = points.to(field.device).round().long()
    return field.at_pixels(xy[:, 0].clamp(0, w - 1), xy[:, 1].clamp(0, h - 1)).t()


def square_offsets(radius: int, device: torch.device) -> torch.Tensor:
    """Integer offsets (dx, dy) of the square of half-size ``radius``, row-major (y, then x)."""
    r = torch.arange(-radius, radius + 1, device=device)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([dx.reshape(-1), dy.reshape(-1)], dim=1)  # [S, 2]


def _disk_offsets(radius: float, device: torch.device) -> torch.Tensor:
    """Integer offsets (dx, dy) with dx^2 + dy^2 < radius^2 (strict, as the official code)."""
    sq = square_offsets(max(0, math.ceil(radius)), device)
    keep = sq.square().sum(dim=1) < radius * radius
    return sq[keep]  # [S, 2]


def _window_distances(
    field: FeatureField, templates: torch.Tensor, handles: torch.Tensor, r2: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared L2 distances [K, S] from each template to F over the square of half-size ``r2``
    around its rounded handle (inf outside the image), and the candidate pixels [K, S, 2]."""
    h, w = field.size
    centre = handles.to(field.device).round().long()  # [K, 2]
    cand = centre[:, None, :] + square_offsets(int(r2), field.device)[None]  # [K, S, 2]
    x, y = cand[..., 0], cand[..., 1]
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)  # [K, S]
    f = field.at_pixels(x.clamp(0, w - 1), y.clamp(0, h - 1))  # [C, K, S]
    dist = (f - templates.float().t()[:, :, None]).square().sum(dim=0)  # [K, S]
    return dist.masked_fill(~inside, float("inf")), cand


@torch.no_grad()
def track_points(
    feat: FeatureField | torch.Tensor,
    templates: torch.Tensor,
    handles: torch.Tensor,
    r2: int,
    return_distance: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Point tracking: move each handle to its template's nearest neighbour near it.

    For handle k, search the square of half-size ``r2`` around its rounded position (clipped to
    the image) for the pixel whose feature vector is nearest, in L2 over channels, to
    ``templates[k]`` (the fixed f_k). Ties go to the first pixel in row-major order.

    feat F (a FeatureField or a [1, C, H, W] map), templates [K, C], handles [K, 2] (x, y)
    -> new handles [K, 2] (integers stored as float32, on the features' device); with
    ``return_distance`` also the L2 feature distance [K] of each best match (how well the
    handle's feature was found: see ``template_spread`` and ``LostRule``).
    """
    field = _field(feat).detach()
    k = handles.shape[0]
    if k == 0:
        empty = handles.clone()
        return (empty, torch.zeros(0, device=handles.device)) if return_distance else empty
    dist, cand = _window_distances(field, templates, handles, r2)
    best = dist.argmin(dim=1)  # [K]
    rows = torch.arange(k, device=field.device)
    new = cand[rows, best].to(torch.float32)
    if return_distance:
        return new, dist[rows, best].clamp(min=0).sqrt()
    return new


@torch.no_grad()
def template_spread(
    feat: FeatureField | torch.Tensor, templates: torch.Tensor, handles: torch.Tensor, r2: int
) -> torch.Tensor:
    """How distinct each template is from its surroundings where it was taken: the median L2
    distance [K] between f_k and F at the pixels of the tracking window (half-size ``r2``, inside
    the image) around its handle. Call it on the features the templates were read from; it is
    the scale against which a later best-match distance says "found" or "lost" (``LostRule``)."""
    field = _field(feat).detach()
    if handles.shape[0] == 0:
        return torch.zeros(0, device=handles.device)
    dist, _ = _window_distances(field, templates, handles, r2)
    d = dist.clamp(min=0).sqrt()  # inf outside the image stays inf
    n_in = torch.isfinite(d).sum(dim=1)  # [K], >= 1 (the handle's own pixel)
    srt = d.sort(dim=1).values
    return srt[torch.arange(len(srt), device=srt.device), (n_in - 1) // 2]  # the (lower) median


def motion_supervision_loss(
    feat: FeatureField | torch.Tensor, handles: torch.Tensor, targets: torch.Tensor, r1: float
) -> torch.Tensor:
    """DragGAN's motion supervision, summed over handles.

    For each handle p (an integer pixel after tracking) with target t and |t - p| > 1, let
    d = (t - p) / |t - p| and Q the pixels q inside the image with |q - p| < r1. The handle adds
    mean over Q and channels of |sg(F(q)) - F(q + d)|, where F(q + d) is sampled bilinearly as
    ``grid_sample(F, align_corners=True)`` (zeros outside the image). Handles within 1 px add 0.

    feat F with gradient, handles and targets [K, 2] (x, y) -> scalar. The result always
    depends on the features (so a backward pass works even when every handle is close).
    """
    field = _field(feat)
    h, w = field.size
    if handles.shape[0] == 0:
        return sum(m.sum() for m in field.maps) * 0.0
    p = handles.to(field.device, torch.float32)
    t = targets.to(field.device, torch.float32)
    delta = t - p  # [K, 2]
    norm = delta.norm(dim=1, keepdim=True)  # [K, 1]
    active = (norm[:, 0] > MOTION_MIN_DISTANCE).float()  # [K]
    direction = delta / (norm + 1e-7)  # [K, 2]
    q = p.round()[:, None, :] + _disk_offsets(r1, field.device)[None].float()  # [K, S, 2]
    qx, qy = q[..., 0], q[..., 1]
    valid = ((qx >= 0) & (qx <= w - 1) & (qy >= 0) & (qy <= h - 1)).float()  # [K, S]
    f_q = field.detach().at_pixels(qx.clamp(0, w - 1).long(), qy.clamp(0, h - 1).long())  # sg(F(q)) [C, K, S]
    f_qd = field.bilinear(qx + direction[:, None, 0], qy + direction[:, None, 1])  # F(q + d) [C, K, S]
    per_handle = ((f_q - f_qd).abs().sum(dim=0) * valid).sum(dim=1) / (
        field.channels * valid.sum(dim=1).clamp(min=1)
    )
    return (per_handle * active).sum()


def mask_loss(
    feat: FeatureField | torch.Tensor, feat0: torch.Tensor, fixed: torch.Tensor, tolerance: float = 0.0
) -> torch.Tensor:
    """mean(max(|F - F0| - tau, 0) * M) with M = 1 on the fixed region, over all C*H*W elements.

    With ``tolerance`` 0 this is DragGAN's term, L1(F * M, F0 * M) with the official normalisation
    (``F.l1_loss`` over the whole masked tensor), so lambda means what it means there. Its gradient
    has the same size for the smallest change as for a large one, and a latent edit changes every
    feature a little: on a generator whose edits are not local (all of ours), lambda 20 then holds
    the whole image still and the drag never moves. A tolerance tau = ``tolerance`` x mean |F0|
    lets each fixed feature drift by that much for free and holds it there with lambda's full
    weight. feat F; feat0 [1, C, H, W]; fixed bool [H, W].
    """
    full = feat.full() if isinstance(feat, FeatureField) else feat
    m = fixed.to(full.dtype)[None, None]  # [1, 1, H, W]
    dev = (full - feat0).abs()
    if tolerance > 0:
        dev = torch.relu(dev - tolerance * feat0.abs().mean())
    return (dev * m).mean()
