"""DragGAN's optimisation mode as a step-at-a-time session (Pan et al., SIGGRAPH 2023).

One ``DragSession`` is one edit: a start latent, handle/target points, an optional mask. Each
``step()`` runs one iteration of DragGAN's loop (XingangPan/DragGAN, viz/renderer.py):

1. one forward pass of the synthesis network with the chosen features (first ``n_opt_rows``
   W+ rows optimised, the rest held at their start values);
2. point tracking (no grad) of every handle on this pass's features;
3. stop check (``stop_rules``): a handle whose feature is no longer found near it is flagged
   lost and left out from then on; every handle lost, or every other one within the stop
   distance of its target -> done ("lost"); every handle there -> done ("reached"); the last
   step of ``max_steps`` -> done ("max_steps"); a done step makes no update;
4. motion supervision (+ lambda * mask term when a mask is set), one Adam step.

The frame returned is the image of step 1's forward pass and the handles are those tracked in
it, so frame and points always agree. When a session is done its ``latent()`` is the latent of
its last frame (the finishing step never updates). ``step_batch`` advances several sessions that
share a generator with a single forward/backward pass; each keeps its own Adam state.

Mask semantics: ``mask`` is bool [H, W] with True = flexible (may move), like the flexible-area
brush of DragGAN's GUIs; everything outside it is kept fixed by the mask term
lambda * mean(max(|F - F0| - tau, 0) * M), M = ~mask, F0 = the features at the start of the
session, tau = ``mask_tolerance`` x mean |F0| (tracking.mask_loss says why).

Where it differs from the official loop, on purpose:

* Pixel grid. The official code selects the motion-supervision disk on a coordinate grid built
  with ``torch.linspace(0, h, h)``, whose points are h / (h - 1) apart, so pixel i sits at
  i * h / (h - 1): the disk drifts from the handle by up to a pixel toward the far edges. Here the
  disk is the integer pixels q with |q - p| < r1 around the rounded handle p (pixel (i, j) covers
  [i, i + 1) x [j, j + 1), tracking.py), so it is centred on the handle everywhere.
* Stop rule. The official code stops when every handle is within max(2, 2 * res / 512) px; here
  the paper's rule (1 px for up to 5 handles, else 2, scaled above 512 px; DragOptions).
* Minimum radii. r1 and r2 scale with res / 512 as in the official code, then are raised to at
  least 2 and 3 px: at 64-128 px the official scaling leaves a one-pixel (or empty) patch.
* Features are read where the method needs them from the block's own map instead of resizing
  the whole map to the image size first (tracking.FeatureField): the same values up to float
  rounding, far less memory and time.
* ``max_steps`` caps a drag (the imgui GUI has no cap; the Gradio app runs until Stop).
* Mask term. DragGAN's plain L1 (tolerance 0) froze every masked drag on our models at
  lambda 20: it prices the smallest change of a fixed feature like a large one, and no latent
  edit leaves the rest of the image exactly as it was. The default tolerance (0.3 x mean |F0|)
  lets fixed features drift that far for free; beyond it lambda holds them (mask_tolerance 0
  restores the official term).
* A handle whose best match is much worse than its template's spread is flagged ``lost``
  (``stop_rules``): it stays where it was and is no longer supervised, the others go on, and the
  drag ends as ``lost`` instead of ``reached``; the official code tracks on whatever it finds.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .drag_options import DTYPES, LIVE_OPTIONS, DragOptions
from .generator import Generator
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
from .stop_rules import arrival, track_and_flag
from .tracking import (
    FeatureField,
    mask_loss,
    motion_supervision_loss,
    resize_features,
)


class DragSession:
    """One DragGAN edit advanced one optimisation step at a time (implements ``EditSession``).

    ``G`` is a ``Generator`` (its device is used); ``w_plus_start`` is [1, num_ws, w_dim];
    ``handles`` and ``targets`` are sequences of (x, y) pixels; ``mask`` is bool [H, W] with
    True = flexible (may move) or None. Not thread-safe: one worker owns a session.
    """

    def __init__(
        self,
        G: Generator,
        w_plus_start: torch.Tensor,
        handles: Sequence[Sequence[float]] | np.ndarray | torch.Tensor,
        targets: Sequence[Sequence[float]] | np.ndarray | torch.Tensor,
        mask: np.ndarray | torch.Tensor | None = None,
        options: DragOptions | None = None,
    ) -> None:
        self.G = G
        self.options = options if options is not None else DragOptions()
        self.size = (int(G.img_resolution), int(G.img_resolution))  # (H, W)
        self.device = G.mapping.w_avg.device
        blocks = self.options.feature_blocks or (G.default_feature_block(),)
        unknown = sorted(set(blocks) - set(G.synthesis.block_resolutions))
        if unknown:
            raise ValueError(
                f"feature_blocks {unknown} not among this generator's blocks {G.synthesis.block_resolutions}"
            )
        self.feature_blocks: tuple[int, ...] = tuple(blocks)
        self._w0 = _check_latent(w_plus_start, G).to(self.device, torch.float32).detach().clone()
        self._n_opt = min(self.options.n_opt_rows, G.num_ws)
        rows = 1 if self.options.space == "w" else self._n_opt
        # Optimise an offset added to the first n rows: for a W latent and space "w" this is the
        # official "one row repeated" parametrisation (Adam is shift-invariant), and a W+ start
        # latent is not flattened to its row 0 at the first step.
        self._delta = torch.zeros(1, rows, G.w_dim, device=self.device, requires_grad=True)
        self._opt = torch.optim.Adam([self._delta], lr=self.options.lr)
        self._handles = torch.empty(0, 2)
        self._targets = torch.empty(0, 2)
        self._templates: torch.Tensor | None = None  # [K, C], fixed f_i per handle
        self._spread: torch.Tensor | None = None  # [K], each template's spread where it was taken
        self._match = torch.zeros(0)  # [K], this step's best-match distance / spread
        self._lost = torch.zeros(0, dtype=torch.bool)  # [K], lost since placed (stop_rules.track_and_flag)
        self._missing: list[bool] = []  # handles whose template is taken at the next forward pass
        self._feat0: list[torch.Tensor] | None = None  # start features at native block resolution
        self._feat0_full: torch.Tensor | None = None  # resized F0, cached while a mask is set
        self._fixed: torch.Tensor | None = None  # bool [H, W], True = kept fixed
        self._step = 0
        self._since_change = 0
        self._done = False
        self._reason: StopReason | None = None
        self._last: StepResult | None = None
        self._version = 0  # bumped by every optimiser update
        self._frame_version = -1  # latent version of ``_frame``
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
        options: DragOptions | None = None,
        truncation_psi: float = 0.7,
    ) -> DragSession:
        """Start from the image a seed names (z from a CPU RNG, truncation applied once)."""
        with torch.no_grad():
            ws = G.ws_from_seed(seed, truncation_psi=truncation_psi)
        return cls(G, ws, handles, targets, mask=mask, options=options)

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
    def radii(self) -> tuple[int, int]:
        return self.options.radii(self.size[0])

    @property
    def stop_distance(self) -> float:
        return self.options.stop_distance_for(self.size[0], len(self._handles))

    def latent(self) -> torch.Tensor:
        """Current W+ latent [1, num_ws, w_dim], detached, float32, on the CPU."""
        with torch.no_grad():
            return self._ws().detach().cpu()

    def use_templates(self, templates: torch.Tensor, spread: torch.Tensor) -> None:
        """Track the current handles with these templates [K, C] and spreads [K] (another session's,
        ``PredictSession.templates``) instead of taking new ones at the next step: the drag goes on
        as the other session's would, looking for the features where that drag began."""
        k = len(self._handles)
        if templates.ndim != 2 or len(templates) != k or spread.shape != (k,):
            raise ValueError(
                f"need templates [{k}, C] and spread [{k}], got {list(templates.shape)}, {list(spread.shape)}"
            )
        self._templates = templates.detach().to(self.device, torch.float32).clone()
        self._spread = spread.detach().to(self.device, torch.float32).clone()
        self._missing = [False] * k

    def _ws(self) -> torch.Tensor:
        """W+ for the forward pass, with the gradient path to the optimised offset. [1, num_ws, w_dim]"""
        head = self._w0[:, : self._n_opt] + self._delta
        return torch.cat([head, self._w0[:, self._n_opt :]], dim=1)

    def _forward_key(self) -> tuple:
        return (id(self.G), self.feature_blocks, self.options.noise_mode, self.options.dtype)

    # -- editing between steps -------------------------------------------------------------------
    def set_points(
        self,
        handles: Sequence[Sequence[float]] | np.ndarray | torch.Tensor,
        targets: Sequence[Sequence[float]] | np.ndarray | torch.Tensor,
        keep: Sequence[int | None] | None = None,
    ) -> None:
        """Replace handles and targets; the step budget restarts and ``done`` is cleared.

        A handle keeps the feature template of a current handle when ``keep[i]`` names that
        handle's index, or, with ``keep=None``, when it lies within 0.5 px of a current
        (tracked) handle position: moving only targets keeps every template. Other handles are
        new: their template is read from the features of the next forward pass at their
        position, i.e. from the image they are placed on (at the first step that is F0).
        """
        rebind_session_points(self, handles, targets, keep)
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
        """Change live options (``LIVE_OPTIONS``: lr, lambda_mask, radii, budget, stop distance).

        Adam's state is kept (a new lr applies from the next step). ``done`` is cleared so the
        next step re-checks the stop rule with the new settings.
        """
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(DragOptions)})
        if unknown:
            raise ValueError(f"unknown drag options: {unknown}")
        fixed = sorted(k for k in changes if k not in LIVE_OPTIONS and changes[k] != getattr(self.options, k))
        if fixed:
            raise ValueError(f"options {fixed} cannot change during a session; start a new one")
        self.options = dataclasses.replace(self.options, **changes)
        for group in self._opt.param_groups:
            group["lr"] = self.options.lr
        self._done = False
        self._reason = None

    # -- stepping -------------------------------------------------------------------------------
    def step(self) -> StepResult:
        """One DragGAN iteration (forward, track, supervise, Adam step)."""
        return step_batch([self])[0]

    @torch.no_grad()
    def render(self) -> np.ndarray:
        """The current latent's image, uint8 [H, W, 3], without stepping (cached until it changes)."""
        if self._frame is None or self._frame_version != self._version:
            img, _ = self.G.synthesis(
                self._ws(), noise_mode=self.options.noise_mode, dtype=DTYPES[self.options.dtype]
            )
            self._frame = _frames(img)[0]
            self._frame_version = self._version
        return self._frame

    def _repeat(self) -> StepResult:
        assert self._last is not None
        return dataclasses.replace(self._last, seconds=0.0)

    def _prepare(self, field: FeatureField) -> None:
        """First use of this pass's features: F0 at the first step, templates for new handles."""
        if self._feat0 is None:
            self._feat0 = [m.detach().clone() for m in field.maps]  # clone: do not pin the batch's storage
        if any(self._missing):
            self._templates, self._spread = take_templates(
                field.detach(), self._handles, self._missing, self._templates, self._spread, self.radii[1]
            )
            self._missing = [False] * len(self._missing)

    def _objective(self, field: FeatureField) -> torch.Tensor:
        """Track the handles on this pass's features, then return this session's loss."""
        r1, r2 = self.radii
        self._handles, self._match, self._lost = track_and_flag(
            field, self._templates, self._spread, self._handles, self._lost, r2, self.options.lost_ratio
        )
        # a lost handle is not supervised: its target is set on it, which motion supervision skips
        targets = torch.where(self._lost[:, None], self._handles, self._targets)
        loss = motion_supervision_loss(field, self._handles, targets, r1)
        if self._fixed is not None and self.options.lambda_mask > 0:
            if self._feat0_full is None:
                self._feat0_full = resize_features(self._feat0, self.size)
            fixed_term = mask_loss(field, self._feat0_full, self._fixed, self.options.mask_tolerance)
            loss = loss + self.options.lambda_mask * fixed_term
        return loss


def step_batch(sessions: Sequence[DragSession]) -> list[StepResult]:
    """Advance several sessions by one step each, one forward and one backward pass per generator.

    Sessions sharing a generator (and feature blocks, noise mode and dtype) are stacked into
    one batch; the summed loss gives each session the gradient it would get alone (the
    generator has no cross-sample interaction), and each session's own Adam steps. Results
    match stepping each session alone up to floating-point noise. Sessions already done
    return their last result again. Each result's ``seconds`` is its batch's wall time.
    """
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


def _step_group(sessions: list[DragSession]) -> list[StepResult]:
    t0 = time.perf_counter()
    s0 = sessions[0]
    G, blocks = s0.G, s0.feature_blocks
    ws = torch.cat([s._ws() for s in sessions])  # [B, num_ws, w_dim]
    img, feats = G.synthesis(
        ws, noise_mode=s0.options.noise_mode, feature_blocks=blocks, dtype=DTYPES[s0.options.dtype]
    )
    losses = []
    for i, s in enumerate(sessions):
        field = FeatureField([feats[b][i : i + 1] for b in blocks], s.size)  # this image's F
        s._prepare(field)
        losses.append(s._objective(field))
    # The last step of a budget only tracks; the others compute gradients now and decide after
    # the single read-back below whether to apply them (a handle that reached its target does not).
    last = [s._since_change + 1 >= s.options.max_steps for s in sessions]
    update = [i for i, s in enumerate(sessions) if not last[i]]
    grads: dict[int, torch.Tensor] = {}
    if update:
        total = torch.stack([losses[i] for i in update]).sum()
        got = torch.autograd.grad(total, [sessions[i]._delta for i in update])
        grads = dict(zip(update, got, strict=True))
    # One device -> host transfer for all numbers, one for the frames.
    host = torch.cat(
        [torch.stack(losses).detach().float()]
        + [_host_row(s._handles, s._targets, s._match, s._lost) for s in sessions]
    ).cpu()
    frames = _frames(img)
    off = len(sessions)
    for i, s in enumerate(sessions):
        k = len(s._handles)
        hs = host[off : off + 2 * k].reshape(k, 2)
        ts = host[off + 2 * k : off + 4 * k].reshape(k, 2)
        match = host[off + 4 * k : off + 5 * k]
        lost = host[off + 5 * k : off + 6 * k] > 0.5
        off += 6 * k
        arrived = arrival((hs - ts).norm(dim=1), lost, s.stop_distance)
        s._step += 1
        s._since_change += 1
        frame_version = s._version
        if arrived is not None:
            s._done, s._reason = True, arrived
        elif last[i]:
            s._done, s._reason = True, "max_steps"
        else:
            s._delta.grad = grads[i]
            s._opt.step()
            s._delta.grad = None
            s._version += 1
        s._frame, s._frame_version = frames[i], frame_version
        s._last = StepResult(
            frame=frames[i],
            handles=_to_points(hs),
            targets=_to_points(ts),
            step=s._step,
            done=s._done,
            reason=s._reason,
            loss=float(host[i]),
            seconds=0.0,
            match=tuple(float(v) for v in match),
            lost=tuple(bool(v) for v in lost),
        )
    seconds = time.perf_counter() - t0
    for s in sessions:
        s._last = dataclasses.replace(s._last, seconds=seconds)
    return [s._last for s in sessions]
