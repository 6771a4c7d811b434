"""Engine modes: how each edit method starts a room's drag session and steps several at once.

An engine mode is a registry entry, :class:`EngineMode` (mode name -> session factory, batched
step, live options). ``optimize`` (DragGAN) is always there. ``predict`` (Auto DragGAN's latent
predictor, ``server.engine.predict_session``) is registered when a predictor bundle that fits the
loaded generator is available (:func:`default_modes`; the app loads the shipped one or
``--predictor``). Without one, a drag started in ``predict`` mode ends at once with reason
``error`` and the message "predictor not available for this model", and ``GET /api/info`` lists
only the available modes. A room's mode (and its latent ``space``, optimize only) is read when its
drag starts; a ``set_params`` change of either during a drag applies to the next drag.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from server.core.state import Params
from server.engine.generator import Generator
from server.engine.session import EditSession, Point, StepResult

SESSION_STEP_CAP = 1_000_000  # the room enforces params.max_steps; sessions never stop at a cap of their own


@dataclass(frozen=True)
class SessionSpec:
    """Everything a mode needs to start one room's drag."""

    room: str
    G: Generator
    w_plus: torch.Tensor  # [1, num_ws, w_dim] on the model's device
    handles: list[Point]
    targets: list[Point]
    mask: np.ndarray | None  # bool [H, W], True = flexible (may move); None: no mask term
    params: Params


def step_each(sessions: Sequence[EditSession]) -> list[StepResult]:
    """A mode without batching: one ``step()`` per session."""
    return [s.step() for s in sessions]


@dataclass(frozen=True)
class EngineMode:
    """One edit method: how to start a session, how to step several at once, how to change settings."""

    name: str
    create: Callable[[SessionSpec], EditSession]
    step_many: Callable[[Sequence[EditSession]], list[StepResult]] = step_each
    options: Callable[[Params, int], dict[str, Any]] | None = None  # live options for set_options


def drag_options(params: Params, resolution: int) -> dict[str, Any]:
    """Room parameters -> DragOptions fields. The room's r1/r2 are image pixels (DragOptions
    counts them at 512 px); null keeps DragOptions' resolution-scaled defaults. ``space`` ("w+" or
    "w") is fixed for a session: :func:`live_drag_options` leaves it out."""
    from server.engine.drag_options import DragOptions

    d = DragOptions()
    opts: dict[str, Any] = {
        "lr": params.lr,
        "lambda_mask": params.lam,
        "max_steps": SESSION_STEP_CAP,
        "stop_distance": params.stop_dist,
        "r1": d.r1 if params.r1 is None else params.r1 * 512 / resolution,
        "r1_min": d.r1_min if params.r1 is None else 1,
        "r2": d.r2 if params.r2 is None else params.r2 * 512 / resolution,
        "r2_min": d.r2_min if params.r2 is None else 1,
        "space": params.space,
    }
    return opts


def live_drag_options(params: Params, resolution: int) -> dict[str, Any]:
    """The options a running DragGAN session takes from changed room parameters (all but ``space``,
    which applies from the next drag)."""
    opts = drag_options(params, resolution)
    del opts["space"]
    return opts


def _create_drag(spec: SessionSpec, **extra: Any) -> EditSession:
    from server.engine.drag import DragSession
    from server.engine.drag_options import DragOptions

    options = DragOptions(**drag_options(spec.params, spec.G.img_resolution), **extra)
    return DragSession(spec.G, spec.w_plus, spec.handles, spec.targets, mask=spec.mask, options=options)


def lost_options(lost_ratio: float | None) -> dict[str, Any]:
    """The server's ``lost_ratio`` setting as session options: None keeps the engine's calibrated
    value (or a predictor file's), 0 turns the lost-handle rule off (``server.engine.stop_rules``)."""
    return {} if lost_ratio is None else {"lost_ratio": lost_ratio or None}


def optimize_mode(lost_ratio: float | None = None) -> EngineMode:
    """DragGAN's optimiser; ``lost_ratio`` as :func:`lost_options`."""
    extra = lost_options(lost_ratio)
    if not extra:
        return EngineMode("optimize", _create_drag, _step_drag, live_drag_options)

    def live(params: Params, resolution: int) -> dict[str, Any]:
        return {**live_drag_options(params, resolution), **extra}

    return EngineMode("optimize", lambda spec: _create_drag(spec, **extra), _step_drag, live)


def _step_drag(sessions: Sequence[EditSession]) -> list[StepResult]:
    from server.engine.drag import step_batch

    return step_batch(sessions)  # type: ignore[arg-type]


def predict_mode(bundle: Any, lost_ratio: float | None = None) -> EngineMode:
    """Auto DragGAN's predictor mode for a loaded ``PredictorBundle`` (``load_predictor(..., G=G)``).
    The predictor's recommended options apply (its sub-step and regularizer strength, not a step
    budget); the room's ``stop_dist`` and ``r2`` override them (``lr``, ``lambda`` and ``r1`` are
    optimiser settings and do not apply). A drag runs one predictor sub-step per tick until the
    handles arrive (``reached``), the room's ``max_steps``, no progress (``stalled``) or a lost
    handle (``lost``): the rules of ``server.engine.stop_rules``, as ``livedrag drag --method
    predict`` runs them. ``lost_ratio`` as :func:`lost_options`."""
    from server.engine.predict_options import PredictOptions
    from server.engine.predict_session import PredictSession, predict_step_batch

    base = PredictOptions.recommended(bundle)
    extra = lost_options(lost_ratio)

    def options(params: Params, resolution: int) -> dict[str, Any]:
        return {
            "max_steps": SESSION_STEP_CAP,  # the room enforces params.max_steps
            "stop_distance": params.stop_dist,
            "r2": base.r2 if params.r2 is None else params.r2 * 512 / resolution,
            "r2_min": base.r2_min if params.r2 is None else 1,
            **extra,
        }

    def create(spec: SessionSpec) -> EditSession:
        opts = PredictOptions.recommended(bundle, **options(spec.params, spec.G.img_resolution))
        return PredictSession(
            spec.G, spec.w_plus, spec.handles, spec.targets, mask=spec.mask, options=opts, model=bundle
        )

    return EngineMode("predict", create, predict_step_batch, options)  # type: ignore[arg-type]


def default_modes(predictor: Any | None = None, lost_ratio: float | None = None) -> dict[str, EngineMode]:
    """The engine modes: ``optimize`` always; ``predict`` when a predictor bundle for the loaded
    generator is given (the app loads the shipped one, or ``--predictor``, at start-up).
    ``lost_ratio``: the server's setting (``--lost-ratio``; None: the engine's, 0: off)."""
    modes = {"optimize": optimize_mode(lost_ratio)}
    if predictor is not None:
        modes["predict"] = predict_mode(predictor, lost_ratio)
    return modes


def step_isolated(
    step_many: Callable[[Sequence[Any]], list[StepResult]], sessions: Sequence[Any]
) -> list[StepResult | BaseException]:
    """One batched step of ``sessions``; when the batch fails, each session alone, so one room's
    failure does not stop the others. -> a StepResult or the exception, per session."""
    try:
        return list(step_many(sessions))
    except Exception:
        results: list[StepResult | BaseException] = []
        for s in sessions:
            try:
                results.append(step_many([s])[0])
            except Exception as e:
                results.append(e)
        return results
