"""The losses and data of predictor training (stage 1 and stage 2, docs/predictor.md, "Training").

Stage 1: the regularizer learns to denoise W rows (``clean_rows``, ``denoise_loss``). Stage 2:
training pairs drawn from teacher trajectories (``Pairs``) and the relative latent, feature, motion,
locality, template and soft-tracking losses (``stage2_losses``, ``track_loss``);
``server/training/predictor_train.py`` runs the loops and ``scripts/train_predictor.py`` documents
every term.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from server.engine.generator import Generator
from server.engine.predict_options import PredictOptions
from server.engine.predictor import LatentPredictor
from server.engine.regularizer import LatentRegularizer, perturb_latents
from server.engine.tracking import (
    MOTION_MIN_DISTANCE,
    FeatureField,
    features_at,
    resize_features,
    square_offsets,
)


def clean_rows(G: Generator, n: int, n_rows: int, gen: torch.Generator) -> torch.Tensor:
    """[n, n_rows, D] independent mapping samples, each truncated by psi ~ U[0.4, 1]."""
    dev = G.mapping.w_avg.device
    z = torch.randn(n * n_rows, G.z_dim, generator=gen).to(dev)
    psi = (0.4 + 0.6 * torch.rand(n * n_rows, 1, generator=gen)).to(dev)
    with torch.no_grad():
        w = G.mapping(z)[:, 0]
        w = G.mapping.w_avg + psi * (w - G.mapping.w_avg)
    return w.reshape(n, n_rows, -1)


def denoise_loss(
    reg: LatentRegularizer, G: Generator, n: int, gen: torch.Generator
) -> tuple[torch.Tensor, float]:
    """Stage-1 loss on a fresh batch, and the same error before denoising (for the ratio)."""
    clean = clean_rows(G, n, reg.cfg.n_rows, gen)
    noisy = perturb_latents(clean, reg.w_std, gen)
    out = reg(noisy)
    loss = ((out - clean) / reg.w_std).square().mean()
    base = ((noisy - clean) / reg.w_std).square().mean().item()
    return loss, base


class Pairs:
    """Training pairs drawn from teacher trajectories (see the module docstring)."""

    def __init__(
        self,
        data: dict,
        traj_ids: np.ndarray,
        substep: float,
        p_single: float,
        span: tuple[float, float] = (0.5, 1.5),
        zero_arrived: bool = False,
        templates: torch.Tensor | None = None,
    ) -> None:
        self.w0 = data["w0"]
        # [n_traj, K, C] each drag's tracking templates (``start_templates``), for a predictor
        # with the template input; None: the batches carry none
        self.templates = templates
        self.dw = data["dw"]
        self.handles = data["handles"]
        self.targets = data["targets"]
        self.offsets = data["offsets"].numpy()
        self.n_points = data["n_points"].numpy()
        lengths = self.offsets[1:] - self.offsets[:-1]
        self.ids = np.asarray([i for i in traj_ids if lengths[i] >= 2])
        if len(self.ids) == 0:
            raise ValueError("no trajectory with at least 2 steps")
        if not 0 < span[0] <= span[1]:
            raise ValueError(f"span must be 0 < low <= high, got {span}")
        self.substep = substep
        self.p_single = p_single
        # the fastest handle's move over a pair, in sub-steps, is drawn from U(span)
        self.span = (float(span[0]), float(span[1]))
        # ask the handles already within MOTION_MIN_DISTANCE of their targets at t for no move,
        # as inference does (PredictSession._substep), instead of their incidental motion
        self.zero_arrived = zero_arrived
        self.n_rows = self.dw.shape[1]

    def pick(self, rng: np.random.Generator, tries: int = 10) -> tuple[int, int, int]:
        """(trajectory, t, k) for one pair; pairs in which no handle moved 0.5 px are drawn again
        (the teacher changed the latent without moving the points: no sub-step to learn)."""
        for _ in range(tries):
            i = int(rng.choice(self.ids))
            a, b = int(self.offsets[i]), int(self.offsets[i + 1])
            n = b - a
            kp = int(self.n_points[i])
            single = rng.random() < self.p_single
            t = 0 if single else int(rng.integers(0, n - 1))
            h = self.handles[a + t : b, :kp].numpy()  # [n - t, kp, 2]
            disp = np.linalg.norm(h[1:] - h[0], axis=-1).max(axis=1)  # [n - t - 1]
            if single:
                k = n - 1
            else:
                hit = np.nonzero(disp >= self.substep * rng.uniform(*self.span))[0]
                k = int(hit[0]) + 1 if len(hit) else n - 1 - t
            if disp[k - 1] >= 0.5:
                break
        return i, t, k

    def batch(self, n: int, rng: np.random.Generator, device: torch.device) -> dict[str, torch.Tensor]:
        picks = [self.pick(rng) for _ in range(n)]
        kmax = max(int(self.n_points[i]) for i, _, _ in picks)
        w_start = self.w0[[i for i, _, _ in picks]]  # [B, num_ws, D]: each drag's first latent
        w_t = w_start.clone()
        w_next = torch.empty(n, self.n_rows, w_t.shape[2])
        handles = torch.zeros(n, kmax, 2)
        targets, substep, h_start = (
            torch.zeros_like(handles),
            torch.zeros_like(handles),
            torch.zeros_like(handles),
        )
        progress = torch.zeros(n, kmax)
        valid = torch.zeros(n, kmax, dtype=torch.bool)
        for j, (i, t, k) in enumerate(picks):
            a, kp = int(self.offsets[i]), int(self.n_points[i])
            w_next[j] = w_t[j, : self.n_rows] + self.dw[a + t + k].float()
            w_t[j, : self.n_rows] += self.dw[a + t].float()
            h0, ht, hk = self.handles[a, :kp], self.handles[a + t, :kp], self.handles[a + t + k, :kp]
            tg = self.targets[i, :kp]
            d0, dt = (tg - h0).norm(dim=1), (tg - ht).norm(dim=1)
            move = hk - ht
            if self.zero_arrived:
                move = move * (dt > MOTION_MIN_DISTANCE + 1e-6)[:, None]
            handles[j, :kp], targets[j, :kp], substep[j, :kp] = ht, tg, move
            h_start[j, :kp] = h0
            progress[j, :kp] = torch.where(d0 > 1e-6, 1 - dt / d0.clamp(min=1e-6), torch.ones_like(d0)).clamp(
                0, 1
            )
            valid[j, :kp] = True
        out = dict(
            w_t=w_t,
            w_next=w_next,
            handles=handles,
            targets=targets,
            substep=substep,
            progress=progress,
            w_start=w_start,
            h_start=h_start,
        )
        if self.templates is not None:
            out["templates"] = self.templates[[i for i, _, _ in picks], :kmax].float()
        out["valid"] = valid
        return {k: v.to(device) for k, v in out.items()}


@torch.no_grad()
def start_templates(G: Generator, data: dict, block: int, batch: int = 64) -> torch.Tensor:
    """Each teacher drag's tracking templates, as a predict drag takes them at its first step:
    the features of ``block`` (resized to the image, ``tracking.features_at``) of its first latent
    at its first handles (rounded). -> [n_traj, K, C] on the CPU, zero for padded points."""
    offsets, n_points = data["offsets"], data["n_points"]
    n_traj, kmax = len(n_points), data["handles"].shape[1]
    dev = G.mapping.w_avg.device
    size = (G.img_resolution, G.img_resolution)
    out = torch.zeros(n_traj, kmax, G.cfg.channels(block))
    for lo in range(0, n_traj, batch):
        hi = min(n_traj, lo + batch)
        _, feats = G.synthesis(data["w0"][lo:hi].float().to(dev), feature_blocks=(block,))
        for j, i in enumerate(range(lo, hi)):
            kp = int(n_points[i])
            h0 = data["handles"][int(offsets[i]), :kp].float()
            out[i, :kp] = features_at(FeatureField([feats[block][j : j + 1]], size), h0).cpu()
    return out


def stage2_losses(
    P: LatentPredictor,
    R: LatentRegularizer,
    G: Generator,
    b: dict[str, torch.Tensor],
    alpha: float,
    feat_weight: float,
    feat_batch: int,
    motion_weight: float = 0.0,
    local_weight: float = 0.0,
    template_weight: float = 0.0,
    track_weight: float = 0.0,
) -> dict[str, torch.Tensor]:
    """The relative latent loss and, with the generator in the loop on ``feat_batch`` samples,
    the relative feature, motion, locality, template and track losses of one batch (see the
    module docstring). A batch without ``w_next`` (an on-policy rollout, ``predictor_rollout``)
    has no teacher label: it gets only the label-free terms (motion, template, track)."""
    n = P.cfg.n_rows
    track = G.default_feature_block()
    blocks = tuple(sorted(set(P.cfg.feature_blocks) | {track}))
    with torch.no_grad():
        _, feats = G.synthesis(b["w_t"], feature_blocks=blocks)
    rows = b["w_t"][:, :n]
    pfeats = [feats[r] for r in P.cfg.feature_blocks]
    pred = P(
        rows, pfeats, b["handles"], b["targets"], b["substep"], b["progress"], b["valid"], b.get("templates")
    )
    out = R.regularize_step(rows, pred, alpha)
    teacher = "w_next" in b  # a rollout batch (predictor_rollout) has no teacher label
    losses: dict[str, torch.Tensor] = {}
    if teacher:
        err = ((out - b["w_next"]) / P.w_std).square().mean()
        base = ((rows - b["w_next"]) / P.w_std).square().mean().clamp(min=1e-12)
        losses["latent"] = err / base
    else:
        feat_weight = local_weight = 0.0
    if feat_batch > 0 and max(feat_weight, motion_weight, local_weight, template_weight, track_weight) > 0:
        m = min(feat_batch, len(rows))
        size = (G.img_resolution, G.img_resolution)

        def features(ws: torch.Tensor) -> torch.Tensor:  # DragGAN's feature map at the image size
            return resize_features([G.synthesis(ws, feature_blocks=(track,))[1][track]], size)

        f_pred = features(torch.cat([out[:m], b["w_t"][:m, n:]], dim=1))
        f_t = resize_features([feats[track][:m]], size)
        h, s, v = b["handles"][:m], b["substep"][:m], b["valid"][:m]
        if feat_weight > 0 or local_weight > 0:
            with torch.no_grad():
                f_next = features(torch.cat([b["w_next"][:m], b["w_t"][:m, n:]], dim=1))
        if feat_weight > 0:
            denom = (f_t - f_next).abs().sum().clamp(min=1e-6)
            losses["feature"] = (f_pred - f_next).abs().sum() / denom
        if local_weight > 0:
            far = far_from_handles(h, v, size, G.img_resolution / 8)
            with torch.no_grad():
                denom = ((f_next - f_t).abs() * far).sum().clamp(min=1e-6)
            losses["local"] = ((f_pred - f_t).abs() * far).sum() / denom
        if motion_weight > 0:
            losses["motion"] = motion_loss(f_pred, f_t, h, s, v & (s.norm(dim=-1) > 0.5))
        if template_weight > 0 or track_weight > 0:
            with torch.no_grad():
                f_0 = features(b["w_start"][:m])
        if template_weight > 0:
            losses["template"] = motion_loss(f_pred, f_0, h, s, v, anchor_at=b["h_start"][:m], baseline=f_t)
        if track_weight > 0:
            losses["track"] = track_loss(f_pred, f_0, h, s, v, b["h_start"][:m], baseline=f_t)
    return losses


def far_from_handles(
    handles: torch.Tensor, valid: torch.Tensor, size: tuple[int, int], radius: float
) -> torch.Tensor:
    """[B, 1, H, W] float mask: 1 where a pixel lies farther than ``radius`` from every valid handle
    (handles [B, K, 2] pixels x, y; valid bool [B, K])."""
    hgt, wid = size
    ys = torch.arange(hgt, dtype=torch.float32, device=handles.device)
    xs = torch.arange(wid, dtype=torch.float32, device=handles.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    dx = gx[None, None] - handles[..., 0, None, None]  # [B, K, H, W]
    dy = gy[None, None] - handles[..., 1, None, None]
    near = (dx.square() + dy.square() <= radius * radius) & valid[..., None, None]
    return (~near.any(1, keepdim=True)).float()


def gather_pixels(f: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """f [B, C, H, W] at integer pixels pts [B, K, S, 2] (x, y; clamped to the image) -> [B, C, K, S]."""
    b, c, hgt, wid = f.shape
    k, s = pts.shape[1], pts.shape[2]
    x = pts[..., 0].long().clamp(0, wid - 1)
    y = pts[..., 1].long().clamp(0, hgt - 1)
    idx = (y * wid + x).reshape(b, 1, k * s).expand(b, c, k * s)
    return f.flatten(2).gather(2, idx).reshape(b, c, k, s)


def track_loss(
    f_pred: torch.Tensor,
    f_0: torch.Tensor,
    handles: torch.Tensor,
    substep: torch.Tensor,
    valid: torch.Tensor,
    anchor_at: torch.Tensor,
    baseline: torch.Tensor,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Soft point tracking: would the tracker find each handle where it was asked to go?

    Point tracking (``tracking.track_points``) takes the pixel whose feature is nearest, in squared
    L2, to the handle's template f = F_0(round(anchor_at)). Here every pixel q of a square around
    the handle's rounded position h (half-size: the search window of DragGAN's r2 at this
    resolution plus the longest move) gets the logit -|F_pred(q) - f|^2 / (T s^2), s^2 the
    template's median squared distance over the same square in F_0 (its spread, how distinct it
    was where it was taken; T = ``temperature``), and the loss is the cross-entropy of that
    softmax against h + substep (bilinear weights on its four pixels): low when the template is
    found where the handle was asked to go and nowhere else, the old place included. Motion and
    template terms only pull the new place toward the feature; this one also pushes the rest of
    the window away from it, which is what decides the tracker's argmin. Relative to the same for
    ``baseline`` (the features before the prediction), so about 1 for the identity map.

    f_pred, f_0, baseline [B, C, H, W] (image size); handles, substep, anchor_at [B, K, 2] pixels;
    valid bool [B, K].
    """
    b, _, hgt, wid = f_0.shape
    reach = int(math.ceil(float(substep.norm(dim=-1).max()))) if substep.numel() else 0
    radius = PredictOptions().radius(wid) + reach  # the session's search window plus the move
    square = square_offsets(radius, f_0.device).float()  # [S, 2]
    centre = handles.round()
    cand = centre[:, :, None, :] + square  # [B, K, S, 2]
    inside = (cand >= 0).all(-1) & (cand[..., 0] <= wid - 1) & (cand[..., 1] <= hgt - 1)
    # where the handle was asked to go, as bilinear weights over the window's pixels
    dest = handles + substep
    w = (1 - (cand - dest[:, :, None, :]).abs()).clamp(min=0).prod(-1) * inside  # [B, K, S]
    ok = valid & inside.any(-1) & (w.sum(-1) > 0.999)
    a0 = anchor_at.round()
    with torch.no_grad():
        tmpl = gather_pixels(f_0, a0[:, :, None, :])  # [B, C, K, 1]
        around0 = a0[:, :, None, :] + square
        in0 = (around0 >= 0).all(-1) & (around0[..., 0] <= wid - 1) & (around0[..., 1] <= hgt - 1)
        d0 = (gather_pixels(f_0, around0) - tmpl).square().sum(1)  # [B, K, S]
        d0 = d0.masked_fill(~in0, float("nan"))
        spread = d0.nanmedian(dim=-1).values.nan_to_num(1.0).clamp(min=1e-6)  # [B, K]

    def ce(f: torch.Tensor) -> torch.Tensor:
        d = (gather_pixels(f, cand) - tmpl).square().sum(1)  # [B, K, S]
        logits = (-d / (temperature * spread[..., None])).masked_fill(~inside, float("-inf"))
        logp = torch.log_softmax(logits, dim=-1).masked_fill(~inside, 0.0)
        return -(w * logp).sum(-1)  # [B, K]

    num = (ce(f_pred) * ok).sum()
    with torch.no_grad():
        den = (ce(baseline) * ok).sum().clamp(min=1e-6)
    return num / den


def motion_loss(
    f_pred: torch.Tensor,
    f_t: torch.Tensor,
    handles: torch.Tensor,
    substep: torch.Tensor,
    valid: torch.Tensor,
    anchor_at: torch.Tensor | None = None,
    baseline: torch.Tensor | None = None,
) -> torch.Tensor:
    """Did the content move by the sub-step? For pixels q within r1 of each handle,
    |F_pred(q + s) - sg(F_t(q))|_1, relative to the same for the unchanged features F_t.

    f_pred, f_t [B, C, H, W] (image size); handles, substep [B, K, 2] pixels; valid bool [B, K].

    The template form: with ``anchor_at`` (the handles where the drag started) and ``f_t`` the
    features of the drag's first latent, the content compared is the handle's start neighbourhood
    (what point tracking looks for: its template), |F_pred(q + s) - sg(F_0(q0))|_1, relative to
    the same for ``baseline`` (the features before the prediction): is the template findable
    where the handle was asked to go?
    """
    b, _, hgt, wid = f_t.shape
    r1 = max(2, round(3 * wid / 512))
    r = torch.arange(-r1, r1 + 1, dtype=torch.float32, device=f_t.device)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    disk = torch.stack([dx.flatten(), dy.flatten()], 1)
    disk = disk[disk.square().sum(1) < r1 * r1]  # [S, 2]
    q = handles.round()[:, :, None, :] + disk  # [B, K, S, 2]
    q0 = q if anchor_at is None else anchor_at.round()[:, :, None, :] + disk

    def inside(p: torch.Tensor) -> torch.Tensor:
        return (p >= 0).all(-1) & (p[..., 0] <= wid - 1) & (p[..., 1] <= hgt - 1)

    ok = valid[:, :, None] & inside(q) & inside(q0)

    def sample(f: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:  # -> [B, C, K, S]
        g = torch.stack([pts[..., 0] / (wid - 1) * 2 - 1, pts[..., 1] / (hgt - 1) * 2 - 1], -1)
        return torch.nn.functional.grid_sample(f, g, mode="bilinear", align_corners=True)

    anchor = sample(f_t, q0).detach()
    moved = q + substep[:, :, None, :]
    w = ok[:, None].float()
    num = ((sample(f_pred, moved) - anchor).abs() * w).sum()
    with torch.no_grad():
        before = f_t if baseline is None else baseline
        den = ((sample(before, moved) - anchor).abs() * w).sum().clamp(min=1e-6)
    return num / den
