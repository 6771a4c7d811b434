"""Teacher labels at the predictor's own states (DAgger: Ross, Gordon and Bagnell, AISTATS 2011).

Teacher trajectories (``trajectories.make_shard``) show the predictor only states on the
optimiser's own path. A predict drag soon leaves it: after a few predicted sub-steps the face and
the handles point tracking reports differ from anything the optimiser produced, and the
predictor's drags settle with a handle or two short of their targets. Here the predictor runs a
teacher drag (from the drag's start, the product's ``PredictSession`` with the file's settings)
for 1..``max_rollout`` steps; DragGAN's optimiser then continues from the state it reached, with
point tracking against the *drag's start templates* (those the predict drag tracked with), for up
to ``teacher_steps`` steps. Each continuation is recorded like a teacher trajectory (latent and
tracked handles per step) and written in the same shard format, so ``Pairs`` trains on it as on
teacher shards (``train_predictor.py --traj`` on a folder holding both).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from server.engine.drag import DragSession
from server.engine.drag_options import DragOptions
from server.engine.generator import Generator
from server.engine.predict_options import PredictOptions
from server.engine.predict_session import PredictSession, predict_step_batch
from server.engine.predictor_io import GeneratorIdentity, PredictorBundle

from .trajectories import pending_shards, record_drags, shard_path, write_shard


@dataclass
class DaggerConfig:
    """What ``make_dagger`` records (shard i is a function of (seed, i) and the inputs)."""

    shards: int = 16
    per_shard: int = 64
    batch: int = 32  # drags advanced together
    seed: int = 23
    max_rollout: int = 12  # predictor steps before the optimiser takes over: uniform 1..max_rollout
    teacher_steps: int = 40  # optimiser steps recorded from each state (fewer if it ends)
    lr: float = 2e-3  # the teacher's Adam step (make_trajectories' default)
    n_rows: int = 6  # rows the teacher optimises (the predictor's n_rows)

    def to_dict(self) -> dict:
        return asdict(self)


def continue_with_optimiser(s: PredictSession, opts: DragOptions) -> DragSession:
    """A ``DragSession`` from predict session ``s``'s latent and handles that tracks with ``s``'s
    start templates (the drag's own), as the predict drag would have at its next step."""
    found = s.templates()
    if found is None:
        raise ValueError("the predict session has not stepped yet: no templates to continue with")
    d = DragSession(s.G, s.latent(), s.handles, s.targets, options=opts)
    d.use_templates(*found)
    return d


def make_dagger_shard(
    G: Generator,
    model: PredictorBundle,
    src: dict,
    ids: np.ndarray,
    shard: int,
    cfg: DaggerConfig,
    bar: Any = None,
) -> list[dict]:
    """The trajectories of one shard: ``per_shard`` drags of the source teacher data ``src``
    (``read_shards``) drawn from ``ids``, each rolled out by the predictor, then continued by the
    optimiser."""
    rng = np.random.default_rng([cfg.seed, shard])
    dev = G.mapping.w_avg.device
    n_rows = min(cfg.n_rows, G.num_ws)
    popts = PredictOptions.recommended(model)
    dopts = DragOptions(lr=cfg.lr, max_steps=cfg.teacher_steps, n_opt_rows=n_rows)
    picks = rng.choice(ids, size=cfg.per_shard, replace=len(ids) < cfg.per_shard)
    offsets = src["offsets"].numpy()
    out: list[dict] = []
    for b0 in range(0, cfg.per_shard, cfg.batch):
        chosen = picks[b0 : b0 + cfg.batch]
        sessions, lengths = [], rng.integers(1, cfg.max_rollout + 1, size=len(chosen))
        for i in chosen:
            kp = int(src["n_points"][i])
            h0 = src["handles"][offsets[i], :kp].numpy()
            t = src["targets"][i, :kp].numpy()
            w0 = src["w0"][i : i + 1].to(dev)
            sessions.append(PredictSession(G, w0, h0, t, options=popts, model=model))
        for step in range(int(lengths.max())):
            active = [s for s, n in zip(sessions, lengths, strict=True) if n > step and not s.done]
            if not active:
                break
            predict_step_batch(active)
        keep = [j for j, s in enumerate(sessions) if s.reason not in ("reached", "lost") and not any(s.lost)]
        drags = [continue_with_optimiser(sessions[j], dopts) for j in keep]
        starts = [d.latent()[0].numpy() for d in drags]  # the predicted states, before recording
        for j, d, w0, rec in zip(keep, drags, starts, record_drags(drags, n_rows), strict=True):
            i = int(chosen[j])
            spec = {"seed": int(src["seeds"][i]), "kind": int(src["kinds"][i]), "w0": w0}
            out.append({**spec, "targets": np.asarray(d.targets, np.float32), **rec})
        if bar is not None:
            bar.update(len(chosen))
    return out


def make_dagger(
    G: Generator,
    model: PredictorBundle,
    src: dict,
    ids: np.ndarray,
    out: Path,
    cfg: DaggerConfig,
    shards: list[int] | None = None,
    meta: dict[str, Any] | None = None,
    bar_factory: Callable[[int], Any] | None = None,
) -> dict:
    """Make the unfinished shards of ``shards`` (default: all of ``cfg.shards``) in ``out``."""
    identity = GeneratorIdentity.of(G)
    todo = pending_shards(out, range(cfg.shards) if shards is None else shards, identity)
    info = {
        "generator": identity.to_dict(),
        "n_rows": min(cfg.n_rows, G.num_ws),
        "resolution": G.img_resolution,
        "dagger": cfg.to_dict(),
        "predictor": model.training,
        **(meta or {}),
    }
    bar = bar_factory(len(todo) * cfg.per_shard) if bar_factory is not None else None
    t0 = time.perf_counter()
    steps = drags = 0
    for i in todo:
        trajs = make_dagger_shard(G, model, src, ids, i, cfg, bar)
        write_shard(shard_path(out, i), trajs, {**info, "shard": i})
        steps += sum(len(t["dw"]) for t in trajs)
        drags += len(trajs)
    if bar is not None:
        bar.close()
    return {"shards_made": len(todo), "drags": drags, "steps": steps, "seconds": time.perf_counter() - t0}
