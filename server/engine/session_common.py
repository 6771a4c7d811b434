"""What the edit sessions (``DragSession``, ``PredictSession``) share: the checks of their inputs
(latent, points, mask), the rule that carries tracking templates over when the points change,
the templates themselves, and the conversion of images to frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .generator import Generator, to_uint8
from .session import Point
from .tracking import FeatureField, features_at, template_spread


def take_templates(
    field: FeatureField | torch.Tensor,
    handles: torch.Tensor,
    missing: Sequence[bool],
    templates: torch.Tensor | None,
    spread: torch.Tensor | None,
    r2: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Templates f_k = F(p_k) and their spreads (``tracking.template_spread``, window half-size
    ``r2``) read from this pass's features for the handles marked ``missing``; the others keep
    theirs. -> (templates [K, C], spread [K])."""
    got = features_at(field, handles)  # [K, C]
    got_spread = template_spread(field, got, handles, r2)  # [K]
    if templates is None or spread is None:
        return got.clone(), got_spread
    miss = torch.tensor(list(missing), device=got.device)
    return torch.where(miss[:, None], got, templates), torch.where(miss, got_spread, spread)


# -- validation and conversion helpers -------------------------------------------------------------


def _check_latent(w: torch.Tensor, G: Generator) -> torch.Tensor:
    if not isinstance(w, torch.Tensor):
        raise ValueError(f"w_plus_start must be a torch.Tensor, got {type(w).__name__}")
    want = (1, G.num_ws, G.w_dim)
    if tuple(w.shape) != want:
        raise ValueError(f"w_plus_start must have shape {list(want)} (one W+ latent), got {list(w.shape)}")
    if not w.is_floating_point():
        raise ValueError(f"w_plus_start must be a floating-point tensor, got {w.dtype}")
    if not torch.isfinite(w).all():
        raise ValueError("w_plus_start contains NaN or infinite values")
    return w


def _check_points(points, name: str, size: tuple[int, int]) -> torch.Tensor:
    """(x, y) points -> float32 [K, 2] on the CPU; K >= 1, finite, inside the image."""
    if isinstance(points, torch.Tensor):
        points = points.detach().cpu().numpy()
    try:
        a = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a list of (x, y) pairs of numbers: {e}") from None
    if a.size == 0:
        raise ValueError(f"{name} is empty: give at least one (x, y) point")
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{name} must be a list of (x, y) pairs, got an array of shape {list(a.shape)}")
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name}[{i}] = {tuple(a[i])} is not finite")
    h, w = size
    out = (a[:, 0] < 0) | (a[:, 0] > w - 1) | (a[:, 1] < 0) | (a[:, 1] > h - 1)
    if out.any():
        i = int(np.argmax(out))
        raise ValueError(
            f"{name}[{i}] = ({a[i, 0]:g}, {a[i, 1]:g}) is outside the {w}x{h} image "
            f"(x in [0, {w - 1}], y in [0, {h - 1}])"
        )
    return torch.from_numpy(a.astype(np.float32))


def _check_mask(mask, size: tuple[int, int]) -> torch.Tensor:
    if isinstance(mask, np.ndarray):
        if mask.dtype != np.bool_:
            raise ValueError(
                f"mask must be a bool array (True = flexible area), got dtype {mask.dtype}; use mask > 0"
            )
        t = torch.from_numpy(mask.copy())
    elif isinstance(mask, torch.Tensor):
        if mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be a bool tensor (True = flexible area), got dtype {mask.dtype}; use mask > 0"
            )
        t = mask.detach()
    else:
        raise ValueError(f"mask must be a numpy array or torch tensor of bools, got {type(mask).__name__}")
    if tuple(t.shape) != tuple(size):
        raise ValueError(f"mask must have the image's shape [H, W] = {list(size)}, got {list(t.shape)}")
    return t


def _rebind_points(
    handles,
    targets,
    keep: Sequence[int | None] | None,
    size: tuple[int, int],
    old_handles: torch.Tensor,
    old_templates: torch.Tensor | None,
    old_spread: torch.Tensor | None,
    old_missing: list[bool],
    old_lost: torch.Tensor,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, list[bool], torch.Tensor]:
    """The point-replacement rule shared by every session (see ``DragSession.set_points``).

    Returns (handles, targets) on ``device``, the feature templates and their spreads carried
    over (zeros where a handle is new), per handle whether its template must be read at the
    next forward pass, and bool [K] on ``device``: whether it is lost (``stop_rules``; a handle
    that keeps its template keeps its flag, a new one starts found).
    """
    h = _check_points(handles, "handles", size)
    t = _check_points(targets, "targets", size)
    if len(h) != len(t):
        raise ValueError(f"handles and targets must pair up: got {len(h)} handles and {len(t)} targets")
    if keep is None:
        keep = _match_points(h, old_handles.cpu()) if old_templates is not None else [None] * len(h)
    elif len(keep) != len(h):
        raise ValueError(f"keep must have one entry per handle ({len(h)}), got {len(keep)}")
    missing = []
    old_lost = old_lost.cpu()
    lost = torch.zeros(len(h), dtype=torch.bool)
    templates = spread = None
    if old_templates is not None and old_spread is not None:
        templates = torch.zeros(len(h), old_templates.shape[1], device=device)
        spread = torch.zeros(len(h), device=device)
    for i, j in enumerate(keep):
        if j is not None and not (0 <= j < len(old_handles)):
            last = len(old_handles) - 1
            raise ValueError(f"keep[{i}] = {j} is not the index of a current handle (0..{last})")
        usable = j is not None and templates is not None and not old_missing[j]
        if usable:
            templates[i] = old_templates[j]
            spread[i] = old_spread[j]
            lost[i] = old_lost[j]
        missing.append(not usable)
    return h.to(device), t.to(device), templates, spread, missing, lost.to(device)


def rebind_session_points(session, handles, targets, keep: Sequence[int | None] | None) -> None:
    """``_rebind_points`` on a session's point state (``_handles``, ``_targets``, ``_templates``,
    ``_spread``, ``_missing``, ``_lost``, the attributes both sessions keep), replaced in place."""
    s = session
    s._handles, s._targets, s._templates, s._spread, s._missing, s._lost = _rebind_points(
        handles, targets, keep, s.size, s._handles, s._templates, s._spread, s._missing, s._lost, s.device
    )


def _match_points(new: torch.Tensor, old: torch.Tensor, tol: float = 0.5) -> list[int | None]:
    """For each new point, the index of an unused old point within ``tol`` px (nearest first)."""
    keep: list[int | None] = []
    used: set[int] = set()
    for p in new:
        best = None
        if len(old):
            d = (old - p).norm(dim=1)
            for j in torch.argsort(d).tolist():
                if d[j] > tol:
                    break
                if j not in used:
                    best = j
                    used.add(j)
                    break
        keep.append(best)
    return keep


def _host_row(
    handles: torch.Tensor, targets: torch.Tensor, match: torch.Tensor, lost: torch.Tensor
) -> torch.Tensor:
    """One session's numbers for a step's single device-to-host read-back: handles [K, 2],
    targets [K, 2], match [K], lost [K] -> float32 [6K]."""
    return torch.cat([handles.reshape(-1), targets.reshape(-1), match.float(), lost.float()])


def _to_points(t: torch.Tensor) -> list[Point]:
    return [(float(x), float(y)) for x, y in t.detach().cpu().tolist()]


def _frames(img: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> uint8 [N, H, W, 3] (grey images repeated to RGB)."""
    a = to_uint8(img)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return a[..., :3]
