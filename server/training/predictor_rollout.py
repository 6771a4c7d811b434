"""On-policy training samples for stage 2: the predictor's own drags, as inference runs them.

Teacher pairs (``Pairs``) start every prediction from a latent on the optimiser's path, with
handles where the optimiser's tracking put them. At inference the predictor starts from its own
previous predictions, and its handles are where point tracking found them after its own moves:
after a few 3 px steps the face, and what the tracker reads, differ from anything the teacher
showed it (exposure bias). ``rollout_batch`` runs the current predictor over the first steps of
teacher drags exactly as ``PredictSession`` does (one synthesis pass, point tracking against the
start templates, the request ``min(substep, remaining)`` toward each target for handles more
than 1 px away, the regularizer's chain step), without gradients, and returns the state it
reached as a batch for ``stage2_losses``. There is no teacher label at such a state, so only the
generator-in-the-loop terms that need none (motion, template, track) are taken on it.
"""

from __future__ import annotations

import numpy as np
import torch

from server.engine.generator import Generator
from server.engine.predict_options import PredictOptions
from server.engine.predict_session import drag_progress, requested_moves
from server.engine.predictor import LatentPredictor
from server.engine.regularizer import LatentRegularizer
from server.engine.tracking import MOTION_MIN_DISTANCE, resize_features, square_offsets

from .predictor_losses import gather_pixels


def track_batch(f: torch.Tensor, templates: torch.Tensor, handles: torch.Tensor, r2: int) -> torch.Tensor:
    """``tracking.track_points`` for a batch: f [B, C, H, W] (image size), templates [B, C, K],
    handles [B, K, 2] -> the nearest template match in the square of half-size ``r2`` around each
    rounded handle (inside the image; ties to the first pixel in row-major order) [B, K, 2]."""
    _, _, hgt, wid = f.shape
    cand = handles.round()[:, :, None, :] + square_offsets(r2, f.device).float()  # [B, K, S, 2]
    inside = (cand >= 0).all(-1) & (cand[..., 0] <= wid - 1) & (cand[..., 1] <= hgt - 1)
    d = (gather_pixels(f, cand) - templates[..., None]).square().sum(1).masked_fill(~inside, float("inf"))
    best = d.argmin(-1)  # [B, K]
    return cand.gather(2, best[..., None, None].expand(-1, -1, 1, 2))[:, :, 0]


@torch.no_grad()
def rollout_batch(
    P: LatentPredictor,
    R: LatentRegularizer,
    G: Generator,
    b: dict[str, torch.Tensor],
    n: int,
    max_steps: int,
    substep: float,
    alpha: float,
    drift: float,
    rng: np.random.Generator,
) -> dict[str, torch.Tensor]:
    """Run the predictor from the starts of the first ``n`` drags of teacher batch ``b`` for 1 to
    ``max_steps`` steps each (uniform), as inference does, and return the batch at the state each
    reached: ``w_t`` (the predicted latent), ``handles`` (tracked in its image), ``targets``,
    ``substep`` (what inference asks next), ``progress``, ``valid``, ``w_start`` and ``h_start``
    (for the template terms). No ``w_next``: there is no teacher label here."""
    was_training = P.training, R.training
    P.eval()
    R.eval()
    rows_n = P.cfg.n_rows
    track = G.default_feature_block()
    blocks = tuple(sorted(set(P.cfg.feature_blocks) | {track}))
    size = (G.img_resolution, G.img_resolution)
    r2 = PredictOptions().radius(G.img_resolution)  # the session's search window
    w_start = b["w_start"][:n]
    h = b["h_start"][:n].clone()
    targets, valid = b["targets"][:n], b["valid"][:n]
    d0 = (targets - h).norm(dim=-1)
    steps = torch.as_tensor(rng.integers(1, max_steps + 1, size=len(w_start)), device=w_start.device)
    w = w_start.clone()
    templates = None
    for t in range(int(steps.max()) + 1):
        _, feats = G.synthesis(w, feature_blocks=blocks)
        f = resize_features([feats[track]], size)
        if templates is None:
            templates = gather_pixels(f, h.round()[:, :, None, :])[..., 0]  # [B, C, K]
        else:
            moved = valid & (steps >= t)[:, None]  # tracked in the image of its last prediction
            h = torch.where(moved[..., None], track_batch(f, templates, h, r2), h)
        go = steps > t
        if not bool(go.any()):
            break
        rows = w[:, :rows_n]
        s = requested_moves(h, targets, substep, MOTION_MIN_DISTANCE, valid)
        pred = P(
            rows,
            [feats[k] for k in P.cfg.feature_blocks],
            h,
            targets,
            s,
            drag_progress(h, targets, d0),
            valid,
            templates.transpose(1, 2) if P.cfg.template_block else None,
        )
        new = R.regularize_chain(w_start[:, :rows_n], rows, pred, alpha, drift)
        w = torch.where(go[:, None, None], torch.cat([new, w[:, rows_n:]], dim=1), w)
    P.train(was_training[0])
    R.train(was_training[1])
    return {
        "w_t": w,
        "handles": h,
        "targets": targets,
        "substep": requested_moves(h, targets, substep, MOTION_MIN_DISTANCE, valid),
        "progress": drag_progress(h, targets, d0),
        "valid": valid,
        "w_start": w_start,
        "h_start": b["h_start"][:n],
        "templates": templates.transpose(1, 2),  # [n, K, C]: the drags' tracking templates
    }
