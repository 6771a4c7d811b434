"""Predictor mode (Auto DragGAN, Cai et al., ACM MM 2024) as a step-at-a-time ``EditSession``.

Each ``step()`` is one autoregressive sub-step, with no optimisation:

1. one forward pass of the synthesis network at the current latent w_t, with the tracking
   features (DragGAN's block) and the predictor's feature blocks;
2. point tracking of every handle on this pass's features (``tracking.track_points``, the
   optimiser's tracking: templates f_i = F0(p_i), search square of half-size r2);
3. stop check (``stop_rules``, the optimiser's rules plus one): a handle no longer found is
   flagged lost and left out from then on (not predicted, not waited for); every handle lost, or
   every other one within the stop distance -> done ("lost"); every handle there -> done
   ("reached"); the last step of ``max_steps`` only tracks ("max_steps"); the mean handle
   distance no closer by more than ``stall_px`` over the last ``stall_steps`` steps -> done
   ("stalled");
4. the Latent Predictor maps (w_t, features, handles, targets, sub-step) to the first rows of
   w_{t+1}, where each handle more than 1 px from its target (DragGAN's motion-supervision rule)
   is asked to move ``min(substep, remaining)`` px straight toward it; the Latent Regularizer then
   removes the part of that step that leaves the generator's W distribution, and ``reg_drift`` of
   the off-distribution part the chain has gathered since the drag's start (``regularize_chain``);
5. with a mask set, ``mask_iters`` damped Polyak steps on DragGAN's fixed-region term
   L1(F * M, F0 * M) at w_{t+1} (one extra forward and backward pass each): the predictor knows
   nothing of masks, so the fixed region is pulled back after each predicted step.

As in ``DragSession``, the frame returned is the image of step 1 and the handles are those
tracked in it; ``latent()`` after a finishing step is the latent of its frame. A drag runs until
the handles arrive (or one of the other rules ends it): the predictor file's own step budget, which
once capped a drag at about 4 sub-steps, is not used any more (``PredictOptions.recommended``).
``single_shot=True`` is the UserControllableLT-style baseline: one prediction over the whole
distance, then one step that only tracks and renders. ``predict_step_batch`` advances several
sessions with one synthesis pass and one predictor pass per (generator, predictor) group.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .drag_options import DTYPES
from .generator import Generator
from .predict_options import LIVE_OPTIONS, PredictOptions
from .predictor_io import PredictorBundle, load_predictor
from .session import Point, StepResult, StopReason
from .session_common import (
    _check_latent,
    _check_mask,
    _frames,
    _host_row,
    _to_points,
    rebind_session_points,
    take_templates,
)
from .stop_rules import StallWatch, arrival, track_and_flag
from .tracking import MOTION_MIN_DISTANCE, mask_loss, resize_features


class PredictSession:
    """One drag edit advanced one predicted sub-step at a time (implements ``EditSession``).

    ``G`` is the generator, ``model`` the predictor bundle trained for it (``load_predictor``);
    the other arguments are ``DragSession``'s and are validated the same way. ``options=None``
    uses the options the predictor was trained with. Not thread-safe: one worker owns a session.
    """

    def __init__(
        self,
        G: Generator,
        w_plus_start: torch.Tensor,
        handles: Sequence[Sequence[float]] | np.ndarray | torch.Tensor,
        targets: Sequence[Sequence[float]] | np.ndarray | torch.Tensor,
        mask: np.ndarray | torch.Tensor | None = None,
        options: PredictOptions | None = None,
        *,
        model: PredictorBundle,
    ) -> None:
        self.G = G
        self.model = model
        self.options = options if options is not None else PredictOptions.recommended(model)
        self.size = (int(G.img_resolution), int(G.img_resolution))  # (H, W)
        self.device = G.mapping.w_avg.device
        pcfg = model.predictor.cfg
        if (pcfg.w_dim, pcfg.num_ws, pcfg.img_resolution) != (G.w_dim, G.num_ws, G.img_resolution):
            raise ValueError(
                f"the predictor was built for W+ [{pcfg.num_ws}, {pcfg.w_dim}] at {pcfg.img_resolution} px, "
                f"this generator has [{G.num_ws}, {G.w_dim}] at {G.img_resolution} px"
            )
        blocks = self.options.feature_blocks or (G.default_feature_block(),)
        unknown = sorted(set(blocks) - set(G.synthesis.block_resolutions))
        if unknown:
            raise ValueError(
                f"feature_blocks {unknown} not among this generator's blocks {G.synthesis.block_resolutions}"
            )
        self.track_blocks: tuple[int, ...] = tuple(blocks)
        if pcfg.template_block and self.track_blocks != (pcfg.template_block,):
            raise ValueError(
                f"this predictor reads tracking templates of block {pcfg.template_block}; "
                f"the session tracks on blocks {list(self.track_blocks)}"
            )
        self.n_rows = pcfg.n_rows
        self._w = _check_latent(w_plus_start, G).to(self.device, torch.float32).detach().clone()
        self._w0_rows = self._w[:, : self.n_rows].clone()  # where the chain began (reg_drift)
        self._handles = torch.empty(0, 2)
        self._targets = torch.empty(0, 2)
        self._d0 = torch.empty(0)  # [K] distance to target when the points were set (for progress)
        self._templates: torch.Tensor | None = None
        self._spread: torch.Tensor | None = None  # [K], each template's spread where it was taken
        self._match = torch.zeros(0)  # [K], this step's best-match distance / spread
        self._lost = torch.zeros(0, dtype=torch.bool)  # [K], lost since placed (stop_rules.track_and_flag)
        self._stall = StallWatch()
        self._missing: list[bool] = []
        self._feat0: list[torch.Tensor] | None = None  # start features (tracking blocks, native size)
        self._feat0_full: torch.Tensor | None = None
        self._fixed: torch.Tensor | None = None  # bool [H, W], True = kept fixed
        self._step = 0
        self._since_change = 0
        self._done = False
        self._reason: StopReason | None = None
        self._last: StepResult | None = None
        self._version = 0
        self._frame_version = -1
        self._frame: np.ndarray | None = None
        self.set_points(handles, targets)
        self.set_mask(mask)

    @classmethod
    def from_seed(
        cls,
        G: Generator,
        seed: int,
        handles,
        targets,
        mask=None,
        options: PredictOptions | None = None,
        truncation_psi: float = 0.7,
        *,
        model: PredictorBundle,
    ) -> PredictSession:
        with torch.no_grad():
            ws = G.ws_from_seed(seed, truncation_psi=truncation_psi)
        return cls(G, ws, handles, targets, mask=mask, options=options, model=model)

    # -- state -----------------------------------------------------------------------------------
    @property
    def handles(self) -> list[Point]:
        return _to_points(self._handles)

    @property
    def targets(self) -> list[Point]:
        return _to_points(self._targets)

    @property
    def step_index(self) -> int:
        return self._step

    @property
    def done(self) -> bool:
        return self._done

    @property
    def reason(self) -> StopReason | None:
        return self._reason

    @property
    def budget(self) -> int:
        """Steps this drag may take since its points were set (``budget_rule``): with 2 px
        sub-steps and ``max_steps`` 4, a 1.5 px drag gets 2 under "fit" (one prediction and the
        tracking step) and a 20 px drag 11 under "cover"; "fixed" always gives ``max_steps``."""
        o = self.options
        if o.budget_rule == "fixed" or o.single_shot or not len(self._d0):
            return o.max_steps
        need = math.ceil(float(self._d0.max()) / o.substep - 1e-6) + 1
        return min(o.max_steps, max(need, 1)) if o.budget_rule == "fit" else max(o.max_steps, need)

    @property
    def stop_distance(self) -> float:
        return self.options.stop_distance_for(self.size[0], len(self._handles))

    def latent(self) -> torch.Tensor:
        """Current W+ latent [1, num_ws, w_dim], detached, float32, on the CPU."""
        return self._w.detach().cpu().clone()

    @property
    def lost(self) -> list[bool]:
        """Per handle: flagged lost since it was placed (``stop_rules.track_and_flag``)."""
        return [bool(v) for v in self._lost]

    def templates(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The tracking templates [K, C] and their spreads [K] (None before the first step)."""
        if self._templates is None or self._spread is None or any(self._missing):
            return None
        return self._templates.detach().clone(), self._spread.detach().clone()

    def _forward_blocks(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.track_blocks) | set(self.model.predictor.cfg.feature_blocks)))

    def _forward_key(self) -> tuple:
        return (
            id(self.G),
            id(self.model.predictor),
            self.track_blocks,
            self.options.noise_mode,
            self.options.dtype,
        )

    # -- editing between steps -------------------------------------------------------------------
    def set_points(
        self,
        handles: Sequence[Sequence[float]] | np.ndarray | torch.Tensor,
        targets: Sequence[Sequence[float]] | np.ndarray | torch.Tensor,
        keep: Sequence[int | None] | None = None,
    ) -> None:
        """Replace handles and targets (rules of ``DragSession.set_points``); the step cap and the
        stall rule's window restart."""
        rebind_session_points(self, handles, targets, keep)
        self._stall.reset()
        self._d0 = (self._targets - self._handles).norm(dim=1)
        self._since_change = 0
        self._done = False
        self._reason = None

    def set_mask(self, mask: np.ndarray | torch.Tensor | None) -> None:
        """Set the flexible area (bool [H, W], True = may move) or clear it with None."""
        if mask is None:
            self._fixed = None
            self._feat0_full = None
            return
        self._fixed = (~_check_mask(mask, self.size)).to(self.device)

    def set_options(self, **changes: Any) -> None:
        """Change live options (``LIVE_OPTIONS``); ``done`` is cleared so the stop rule is re-checked."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(PredictOptions)})
        if unknown:
            raise ValueError(f"unknown predict options: {unknown}")
        fixed = sorted(k for k in changes if k not in LIVE_OPTIONS and changes[k] != getattr(self.options, k))
        if fixed:
            raise ValueError(f"options {fixed} cannot change during a session; start a new one")
        self.options = dataclasses.replace(self.options, **changes)
        self._done = False
        self._reason = None

    # -- stepping -------------------------------------------------------------------------------
    def step(self) -> StepResult:
        """One predicted sub-step (forward, track, predict, regularize)."""
        return predict_step_batch([self])[0]

    @torch.no_grad()
    def render(self) -> np.ndarray:
        """The current latent's image, uint8 [H, W, 3], without stepping (cached until it changes)."""
        if self._frame is None or self._frame_version != self._version:
            img, _ = self.G.synthesis(
                self._w, noise_mode=self.options.noise_mode, dtype=DTYPES[self.options.dtype]
            )
            self._frame = _frames(img)[0]
            self._frame_version = self._version
        return self._frame

    def _repeat(self) -> StepResult:
        assert self._last is not None
        return dataclasses.replace(self._last, seconds=0.0)

    def _prepare(self, feat: torch.Tensor, native: list[torch.Tensor]) -> None:
        """Start features at the first step; templates for handles that have none yet."""
        if self._feat0 is None:
            self._feat0 = [f.detach().clone() for f in native]
        if any(self._missing):
            self._templates, self._spread = take_templates(
                feat,
                self._handles,
                self._missing,
                self._templates,
                self._spread,
                self.options.radius(self.size[0]),
            )
            self._missing = [False] * len(self._missing)

    def _substep(self) -> torch.Tensor:
        """Requested move of each handle in this step, [K, 2]: toward the target, at most
        ``substep`` px (the whole way in single-shot mode). As in DragGAN's motion supervision, a
        handle is asked to move while it is more than 1 px away (``MOTION_MIN_DISTANCE``, or the
        stop distance if that is smaller), so with more than 5 handles, whose stop distance is
        2 px, the handles 1-2 px away keep moving until all of them are within 2 px."""
        substep = math.inf if self.options.single_shot else self.options.substep
        return requested_moves(
            self._handles, self._targets, substep, min(MOTION_MIN_DISTANCE, self.stop_distance), ~self._lost
        )

    def _progress(self) -> torch.Tensor:
        return drag_progress(self._handles, self._targets, self._d0)

    def _mask_correction(self, w: torch.Tensor) -> torch.Tensor:
        """``mask_iters`` damped Polyak steps on the fixed-region term at ``w`` [1, num_ws, D]:
        w <- w - mask_step * L / |grad L|^2 * grad L (the step that would zero L if it were linear)."""
        o = self.options
        if self._fixed is None or o.mask_step == 0 or o.mask_iters == 0:
            return w
        if self._feat0_full is None:
            self._feat0_full = resize_features(self._feat0, self.size)
        head, tail = w[:, : self.n_rows].detach().clone(), w[:, self.n_rows :]
        for _ in range(o.mask_iters):
            head.requires_grad_(True)
            with torch.enable_grad():
                _, feats = self.G.synthesis(
                    torch.cat([head, tail], dim=1),
                    noise_mode=o.noise_mode,
                    feature_blocks=self.track_blocks,
                    dtype=DTYPES[o.dtype],
                )
                feat = resize_features([feats[b] for b in self.track_blocks], self.size)
                loss = mask_loss(feat, self._feat0_full, self._fixed)
                (g,) = torch.autograd.grad(loss, head)
            head = head.detach() - o.mask_step * loss.detach() / (g.square().sum() + 1e-12) * g
        return torch.cat([head, tail], dim=1)


def requested_moves(
    handles: torch.Tensor, targets: torch.Tensor, substep: float, min_distance: float, active: torch.Tensor
) -> torch.Tensor:
    """What a predict step asks of each handle, [..., K, 2]: straight toward its target, at most
    ``substep`` px (``math.inf``: the whole way); nothing for handles within ``min_distance`` px
    or not ``active`` (bool [..., K]). Handles and targets [..., K, 2]."""
    rem = targets - handles
    dist = rem.norm(dim=-1, keepdim=True)
    step = rem * (substep / dist.clamp(min=1e-6)).clamp(max=1.0)
    return step * ((dist > min_distance + 1e-6) & active[..., None])


def drag_progress(handles: torch.Tensor, targets: torch.Tensor, d0: torch.Tensor) -> torch.Tensor:
    """Each handle's share of its way done, [..., K] in [0, 1]: 1 - distance / ``d0`` (the
    distance when the points were set; 1 where that was 0)."""
    frac = 1.0 - (targets - handles).norm(dim=-1) / d0.clamp(min=1e-6)
    return torch.where(d0 > 1e-6, frac, torch.ones_like(frac)).clamp(0.0, 1.0)


def predict_step_batch(sessions: Sequence[PredictSession]) -> list[StepResult]:
    """Advance several sessions by one sub-step each: one synthesis pass and one predictor pass per
    group of sessions sharing a generator, a predictor and forward settings. Sessions already done
    return their last result again. Each result's ``seconds`` is its group's wall time."""
    if len({id(s) for s in sessions}) != len(sessions):
        raise ValueError("a session appears twice in the batch")
    results: list[StepResult | None] = [None] * len(sessions)
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(sessions):
        if s.done:
            results[i] = s._repeat()
        else:
            groups.setdefault(s._forward_key(), []).append(i)
    for idx in groups.values():
        for i, r in zip(idx, _step_group([sessions[i] for i in idx]), strict=True):
            results[i] = r
    return results  # type: ignore[return-value]


@torch.no_grad()
def _step_group(sessions: list[PredictSession]) -> list[StepResult]:
    t0 = time.perf_counter()
    s0 = sessions[0]
    G, model = s0.G, s0.model
    pblocks = model.predictor.cfg.feature_blocks
    ws = torch.cat([s._w for s in sessions])  # [B, num_ws, D]
    img, feats = G.synthesis(
        ws,
        noise_mode=s0.options.noise_mode,
        feature_blocks=s0._forward_blocks(),
        dtype=DTYPES[s0.options.dtype],
    )
    feat = resize_features([feats[b] for b in s0.track_blocks], s0.size)  # [B, C, H, W] float32
    for i, s in enumerate(sessions):
        f = feat[i : i + 1]
        s._prepare(f, [feats[b][i : i + 1] for b in s0.track_blocks])
        s._handles, s._match, s._lost = track_and_flag(
            f, s._templates, s._spread, s._handles, s._lost, s.options.radius(s.size[0]), s.options.lost_ratio
        )
    host = torch.cat([_host_row(s._handles, s._targets, s._match, s._lost) for s in sessions]).cpu()
    ends: list[StopReason | None] = []
    tracked, off = [], 0
    for s in sessions:
        k = len(s._handles)
        hs, ts = host[off : off + 2 * k].reshape(k, 2), host[off + 2 * k : off + 4 * k].reshape(k, 2)
        match = host[off + 4 * k : off + 5 * k]
        lost = host[off + 5 * k : off + 6 * k] > 0.5
        off += 6 * k
        dist = (hs - ts).norm(dim=1)
        s._stall.add(dist[~lost])
        tracked.append((hs, ts, match, lost))
        o = s.options
        arrived = arrival(dist, lost, s.stop_distance)
        if arrived is not None:
            ends.append(arrived)
        elif s._since_change + 1 >= s.budget or (o.single_shot and s._since_change >= 1):
            ends.append("max_steps")
        elif not o.single_shot and s._stall.stalled(
            o.stall_steps, o.stall_px_for(s.size[0]), o.stall_measure
        ):
            ends.append("stalled")
        else:
            ends.append(None)
    update = [i for i in range(len(sessions)) if ends[i] is None]
    if update:
        ups = [sessions[i] for i in update]
        kmax = max(len(s._handles) for s in ups)
        u, dev = len(ups), s0.device
        handles = torch.zeros(u, kmax, 2, device=dev)
        targets, substep = torch.zeros_like(handles), torch.zeros_like(handles)
        progress = torch.zeros(u, kmax, device=dev)
        valid = torch.zeros(u, kmax, dtype=torch.bool, device=dev)
        pcfg = model.predictor.cfg
        templates = torch.zeros(u, kmax, pcfg.template_channels, device=dev) if pcfg.template_block else None
        for j, s in enumerate(ups):
            k = len(s._handles)
            handles[j, :k], targets[j, :k] = s._handles, s._targets
            substep[j, :k], progress[j, :k], valid[j, :k] = s._substep(), s._progress(), ~s._lost
            if templates is not None:
                templates[j, :k] = s._templates
        rows = ws[update, : s0.n_rows]
        pfeats = [feats[b][update] for b in pblocks]
        new = model.predictor(rows, pfeats, handles, targets, substep, progress, valid, templates)
        alphas = [
            model.regularizer.cfg.alpha if s.options.reg_alpha is None else s.options.reg_alpha for s in ups
        ]
        drifts = [s.options.reg_drift for s in ups]
        if any(a > 0 for a in alphas + drifts):
            a = torch.tensor(alphas, device=dev, dtype=new.dtype)[:, None, None]
            b = torch.tensor(drifts, device=dev, dtype=new.dtype)[:, None, None]
            start = torch.cat([s._w0_rows for s in ups])
            new = model.regularizer.regularize_chain(start, rows, new, a, b)
        for j, s in enumerate(ups):
            w = torch.cat([new[j : j + 1], s._w[:, s.n_rows :]], dim=1)
            s._w = s._mask_correction(w)
            s._version += 1
    frames = _frames(img)
    frame_versions = [s._version - (1 if i in update else 0) for i, s in enumerate(sessions)]
    for i, s in enumerate(sessions):
        hs, ts, match, lost = tracked[i]
        s._step += 1
        s._since_change += 1
        if ends[i] is not None:
            s._done, s._reason = True, ends[i]
        s._frame, s._frame_version = frames[i], frame_versions[i]
        s._last = StepResult(
            frame=frames[i],
            handles=_to_points(hs),
            targets=_to_points(ts),
            step=s._step,
            done=s._done,
            reason=s._reason,
            loss=0.0,
            seconds=0.0,
            match=tuple(float(v) for v in match),
            lost=tuple(bool(v) for v in lost),
        )
    seconds = time.perf_counter() - t0
    for s in sessions:
        s._last = dataclasses.replace(s._last, seconds=seconds)
    return [s._last for s in sessions]


def make_predict_session(
    G: Generator,
    w_plus_start: torch.Tensor,
    handles,
    targets,
    mask=None,
    *,
    path: str | Path | None = None,
    model: PredictorBundle | None = None,
    **changes: Any,
) -> PredictSession:
    """A ``PredictSession`` with the predictor file at ``path`` (None: the shipped one) or ``model``,
    its recommended options updated by ``changes`` (e.g. ``max_steps=100``)."""
    if model is None:
        model = load_predictor(path, G=G)
    options = PredictOptions.recommended(model, **changes)
    return PredictSession(G, w_plus_start, handles, targets, mask=mask, options=options, model=model)
