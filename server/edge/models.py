"""The models a server offers, from its settings: the default (the first ``--checkpoint``, else the
embedded SynthFaces model), every further ``--checkpoint``, the embedded model when it is not the
default, and each folder of a ``--models`` library (``server/models``). The default loads at
start-up; the others load when a room first needs them (``server.worker.models.ModelPool``).

A model's name is what rooms store and clients pick: a library folder's name, or for a generator
file its configured name (else the file's stem), as single-model servers have always named it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from server.edge.config import Settings
from server.engine.checkpoint import CheckpointError, default_checkpoint_path, read_metadata
from server.engine.generator import Generator, GeneratorConfig
from server.models import ModelLibrary
from server.models.library import DEFAULT_MODEL
from server.storage.store import Store
from server.worker.models import LoadedModel, ModelPool, ModelSpec, load_model
from server.worker.modes import EngineMode
from server.worker.projector import Projector

log = logging.getLogger(__name__)


def model_name(G: Generator, checkpoint: str | None) -> str:
    name = G.cfg.name or (Path(checkpoint).stem if checkpoint else "generator")
    return name[:64]


def file_spec(path: str | None, *, default: bool = False, shipped: bool = False) -> ModelSpec:
    """A generator file's spec (None: the embedded one), read from its metadata only."""
    g = default_checkpoint_path() if path is None else Path(path)
    if g is None:
        raise FileNotFoundError("no embedded generator in this checkout")
    try:
        cfg = GeneratorConfig.from_dict(json.loads(read_metadata(g)["config"]))
    except (CheckpointError, KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{g}: not a livedrag generator ({' '.join(str(e).split())})") from None
    name = (cfg.name or g.stem)[:64]
    embedded = path is None
    return ModelSpec(
        name,
        cfg.img_resolution,
        generator=None if embedded else str(g),
        licence="MIT" if embedded else "unknown",
        source="embedded SynthFaces model (docs/model.md)" if embedded else g.name,
        shipped=shipped or embedded,
        default=default,
    )


def library_specs(root: Path) -> list[ModelSpec]:
    """The specs of a library folder's entries (the embedded default left out: it is always
    offered anyway). An entry whose card is unreadable is skipped with a warning."""
    lib = ModelLibrary(root)
    if not root.is_dir():
        raise FileNotFoundError(f"model library {root} is not a folder")
    specs = []
    for name in lib.names():
        if name == DEFAULT_MODEL:
            continue
        entry = lib.entry(name)
        if entry.card is None:
            log.warning("model %s skipped: %s (livedrag models check says more)", name, entry.card_error)
            continue
        card = entry.card
        specs.append(
            ModelSpec(
                name,
                card.resolution,
                generator=str(entry.path("generator")),
                predictor=None if entry.path("predictor") is None else str(entry.path("predictor")),
                encoder=None if entry.path("encoder") is None else str(entry.path("encoder")),
                licence=card.licence,
                source=card.source,
            )
        )
    return specs


async def build_pool(
    settings: Settings,
    device: torch.device,
    store: Store,
    generator: Generator | None = None,
    modes: dict[str, EngineMode] | None = None,
    projector: Projector | None = None,
) -> ModelPool:
    """The server's models, the default loaded (``generator``, ``modes``, ``projector`` replace
    what would be loaded for it: tests and embedding apps)."""
    if generator is not None:
        name = model_name(generator, settings.checkpoint)
        res = int(generator.img_resolution)
        default_spec = ModelSpec(name, res, generator=settings.checkpoint, shipped=True, default=True)
    else:
        default_spec = file_spec(settings.checkpoint, default=True)
    default_spec = replace(default_spec, predictor=settings.predictor, encoder=settings.encoder, shipped=True)
    load = partial(load_model, device=device, store=store, lost_ratio=settings.lost_ratio)
    default = await asyncio.to_thread(
        load, default_spec, generator=generator, modes=modes, projector=projector
    )
    others: list[ModelSpec] = [file_spec(p) for p in settings.extra_checkpoints]
    if settings.checkpoint is not None or generator is not None:
        try:
            others.insert(0, file_spec(None))
        except (FileNotFoundError, ValueError) as e:
            log.warning("the embedded model is not offered: %s", e)
    if settings.models_dir is not None:
        others += library_specs(settings.models_dir)
    seen = {default.name}
    unique = []
    for s in others:
        if s.name in seen:
            if s.generator is None or s.generator == default_spec.generator:
                continue  # the embedded model served as the default as well
            raise ValueError(f"two models are named {s.name!r} ({s.source}); rename one")
        seen.add(s.name)
        unique.append(s)
    pool = ModelPool(
        default,
        unique,
        loader=load,
        idle_s=settings.model_idle_s,
        memory_bytes=int(settings.model_memory_mb * 2**20),
    )
    if unique:
        log.info("models offered: %s (default %s)", ", ".join(pool.names()), pool.default)
    return pool


__all__ = ["LoadedModel", "ModelPool", "build_pool", "file_spec", "library_specs", "model_name"]
