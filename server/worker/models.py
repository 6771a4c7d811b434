"""The models a worker serves: each a generator with its engine modes, projector and latents
(:class:`LoadedModel`), described before it loads by a :class:`ModelSpec`, and held by a
:class:`ModelPool` that loads a model on first use and unloads it after an idle time, within a
memory cap.

A room's image names its model (``ImageInfo.model``); every job of the room runs on that model's
generator, modes, projector and latent format, and rooms of different models are never stepped in
one batch. The default model (the embedded one, or the first ``--checkpoint``) is loaded at start-up
and never unloaded. Every other model loads in a thread of its own when a room first needs it: the
worker keeps ticking the other rooms meanwhile and picks the waiting jobs up once it is ready. A
model that cannot be loaded (a broken file, the memory cap) fails the jobs that wanted it with the
reason, and is tried again only after ``RETRY_S``.

Threads: the pool's tables change only on the event loop (:meth:`ModelPool.ensure`,
:meth:`ModelPool.sweep`); the engine thread reads them (:meth:`ModelPool.get`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from server.engine.generator import Generator
from server.storage.store import Store
from server.worker.latents import Latents
from server.worker.modes import EngineMode, default_modes
from server.worker.projector import Projector
from server.worker.state import EngineError

log = logging.getLogger(__name__)

RETRY_S = 10.0  # a model that failed to load is tried again after this long


@dataclass(frozen=True)
class ModelSpec:
    """One model a server offers, before it is loaded: what clients see and where its files are.

    ``predictor`` / ``encoder`` None: the model has none, except for the embedded model
    (``shipped``), which takes the shipped files when they fit its generator."""

    name: str  # what rooms store (ImageInfo.model) and clients pick
    resolution: int
    generator: str | None = None  # .safetensors path; None: the embedded generator
    predictor: str | None = None
    encoder: str | None = None
    licence: str = "unknown"
    source: str = ""
    shipped: bool = False  # None predictor / encoder paths mean the shipped files
    default: bool = False

    def claimed_modes(self) -> list[str]:
        """The modes its files claim before it is loaded (loading checks that they fit)."""
        return ["optimize"] + ["predict"] * (self.predictor is not None)

    def public(self) -> dict[str, Any]:
        """The card fields clients see (``GET /api/models``); ``modes`` and ``projection`` are
        what its files claim until it is loaded, then what it offers."""
        return {
            "name": self.name,
            "resolution": self.resolution,
            "licence": self.licence,
            "source": self.source,
            "default": self.default,
            "modes": self.claimed_modes(),
            "projection": ["encoder", "optimize"] if self.encoder is not None else ["optimize"],
        }


@dataclass
class LoadedModel:
    """A model ready on the device: what every job of its rooms runs on."""

    spec: ModelSpec
    G: Generator
    modes: dict[str, EngineMode]
    projector: Projector
    latents: Latents
    unavailable: dict[str, str] = field(default_factory=dict)  # mode -> why this model lacks it
    nbytes: int = 0  # parameters and buffers of its networks, what the memory cap counts
    last_used: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def resolution(self) -> int:
        return int(self.G.img_resolution)

    @property
    def available_modes(self) -> list[str]:
        return sorted(self.modes)

    def public(self) -> dict[str, Any]:
        return {
            **self.spec.public(),
            "modes": self.available_modes,
            "unavailable_modes": dict(self.unavailable),
            "projection": self.projector.methods,
        }


def module_bytes(*modules: Any) -> int:
    """Bytes of the parameters and buffers of ``modules`` (None entries skipped)."""
    total = 0
    for m in modules:
        if isinstance(m, torch.nn.Module):
            total += sum(t.numel() * t.element_size() for t in (*m.parameters(), *m.buffers()))
    return total


def predictor_status(G: Generator, path: str | None, shipped: bool = True) -> tuple[Any | None, str | None]:
    """The predictor bundle for ``G`` (from ``path``, else the shipped one when ``shipped``) or None,
    and why not. A missing or unfitting shipped predictor only turns predict mode off, with a
    reason that GET /api/info and the room's mode switch show; a named file that fails raises."""
    from server.engine.predictor_io import PredictorError, PredictorNotFoundError, load_predictor

    if path is None and not shipped:
        return None, "no predictor is trained for this model yet (livedrag train makes one)"
    try:
        return load_predictor(path, G=G), None
    except PredictorNotFoundError:
        if path is not None:
            raise
        why = "no predictor is trained for this model yet"
    except PredictorError as e:
        if path is not None:
            raise
        log.info("the shipped predictor does not fit this model: %s", e)
        why = "the shipped predictor belongs to another model; none is trained for this one yet"
    log.warning("predict mode is off: %s (optimize mode works)", why)
    return None, why


def load_model(
    spec: ModelSpec,
    device: torch.device,
    store: Store,
    *,
    lost_ratio: float | None = None,
    generator: Generator | None = None,
    modes: dict[str, EngineMode] | None = None,
    projector: Projector | None = None,
) -> LoadedModel:
    """Load ``spec``'s networks on ``device`` (blocking: run it off the event loop). ``generator``,
    ``modes`` and ``projector`` replace what would be loaded (tests, embedding apps)."""
    from server.engine.checkpoint import load_generator

    t0 = time.perf_counter()
    G = generator.to(device) if generator is not None else load_generator(spec.generator, device)
    if G.img_resolution != spec.resolution:
        raise EngineError(
            f"model {spec.name}: its generator draws {G.img_resolution} px, its card says {spec.resolution}"
        )
    unavailable: dict[str, str] = {}
    predictor = None
    if modes is None:
        predictor, why = predictor_status(G, spec.predictor, shipped=spec.shipped)
        modes = default_modes(predictor, lost_ratio=lost_ratio)
        if why:
            unavailable["predict"] = why
    if projector is None:
        if spec.encoder is not None or spec.shipped:
            projector = Projector.load(G, spec.encoder)
        else:
            projector = Projector(G)
    model = LoadedModel(
        spec,
        G,
        dict(modes),
        projector,
        Latents(G, spec.name, store),
        unavailable,
        nbytes=module_bytes(G, getattr(predictor, "predictor", None), getattr(predictor, "regularizer", None))
        + module_bytes(projector.encoder),
    )
    log.info(
        "model %s loaded (%d px, %.1f MB on %s, modes %s) in %.2f s",
        spec.name,
        model.resolution,
        model.nbytes / 2**20,
        device,
        ", ".join(model.available_modes),
        time.perf_counter() - t0,
    )
    return model


Loader = Callable[[ModelSpec], LoadedModel]


class ModelPool:
    """The models of one worker: their specs, the loaded ones, loads in flight and failures.

    ``idle_s``: a loaded model that no live room uses is unloaded after this long (0: never);
    ``memory_bytes``: the loaded models' networks together stay under this (0: no cap); to load
    one more, the least recently used models that no live room uses are unloaded first, and a
    model that still does not fit is refused with the reason."""

    def __init__(
        self,
        default: LoadedModel,
        specs: Iterable[ModelSpec] = (),
        *,
        loader: Loader | None = None,
        idle_s: float = 600.0,
        memory_bytes: int = 0,
        on_ready: Callable[[str], None] | None = None,
        in_use: Callable[[], set[str]] | None = None,
    ) -> None:
        self.default = default.name
        self.specs: dict[str, ModelSpec] = {default.name: default.spec}
        for s in specs:
            if s.name in self.specs:
                raise ValueError(f"two models are named {s.name!r}; rename one (models need unique names)")
            self.specs[s.name] = s
        self._loaded: dict[str, LoadedModel] = {default.name: default}
        self._loading: dict[str, asyncio.Task[None]] = {}
        self._failed: dict[str, tuple[str, float]] = {}  # name -> (reason, monotonic time)
        self._loader = loader
        self.idle_s = idle_s
        self.memory_bytes = memory_bytes
        self.on_ready = on_ready  # called on the loop after every load attempt (the worker wakes)
        self.in_use = in_use  # names of the models live rooms use (the worker sets it)
        self.loads = 0  # models loaded after start-up (counters for logs and tests)
        self.unloads = 0

    # --- any thread -------------------------------------------------------------------------

    def names(self) -> list[str]:
        """The default first, then the others in the order they were given."""
        return list(self.specs)

    def loaded(self, name: str) -> LoadedModel | None:
        return self._loaded.get(name)

    def get(self, name: str) -> LoadedModel:
        """The loaded model ``name`` (engine thread), marked used now; EngineError when it is
        unknown or not loaded."""
        m = self._loaded.get(name)
        if m is None:
            if name not in self.specs:
                raise EngineError(self.unknown(name))
            failed = self._failed.get(name)
            raise EngineError(failed[0] if failed else f"model {name} is not loaded yet")
        m.last_used = time.monotonic()
        return m

    def unknown(self, name: str) -> str:
        return f"this server has no model {name!r} (it offers: {', '.join(self.specs)})"

    def failure(self, name: str) -> str | None:
        """Why ``name`` could not be loaded, while that is recent enough to stand; else None."""
        failed = self._failed.get(name)
        if failed is None or time.monotonic() - failed[1] > RETRY_S:
            return None
        return failed[0]

    def describe(self) -> list[dict[str, Any]]:
        """Every model for ``GET /api/models``: the card, and once loaded its modes."""
        out = []
        for name, spec in self.specs.items():
            m = self._loaded.get(name)
            d = m.public() if m is not None else spec.public()
            d["loaded"] = m is not None
            if name in self._failed:
                d["error"] = self._failed[name][0]
            out.append(d)
        return out

    @property
    def used_bytes(self) -> int:
        return sum(m.nbytes for m in self._loaded.values())

    # --- event loop ---------------------------------------------------------------------------

    def ensure(self, name: str) -> asyncio.Task[None] | None:
        """Start loading ``name`` unless it is loaded, loading, or failed within ``RETRY_S``.
        -> the load's task (await it to wait), or None when there is nothing to wait for."""
        if name in self._loaded or name not in self.specs or self.failure(name) is not None:
            return None
        task = self._loading.get(name)
        if task is None:
            task = self._loading[name] = asyncio.get_running_loop().create_task(
                self._load(name), name=f"load model {name}"
            )
        return task

    async def wait_loaded(self, name: str) -> LoadedModel:
        """The loaded model ``name``, loading it first if need be; EngineError with the reason."""
        task = self.ensure(name)
        if task is not None:
            await asyncio.shield(task)
        return self.get(name)

    async def _load(self, name: str) -> None:
        spec = self.specs[name]
        try:
            if self._loader is None:
                raise EngineError(f"model {name}: this server cannot load models")
            log.info("loading model %s (a room needs it)", name)
            model = await asyncio.to_thread(self._loader, spec)
            self._make_room_for(model)
        except Exception as e:
            known = isinstance(e, (EngineError, ValueError, OSError))
            reason = str(e) if known else f"{type(e).__name__}: {e}"
            reason = f"model {name} could not be loaded: {' '.join(reason.split())}"[:400]
            log.error("%s", reason)
            self._failed[name] = (reason, time.monotonic())
        else:
            self._failed.pop(name, None)
            self._loaded[name] = model
            self.loads += 1
        finally:
            self._loading.pop(name, None)
            if self.on_ready is not None:
                self.on_ready(name)

    def _make_room_for(self, model: LoadedModel) -> None:
        """Unload unused models, least recently used first, until ``model`` fits the cap; raise
        EngineError when it cannot."""
        if not self.memory_bytes:
            return
        in_use = self._in_use()
        for m in sorted(self._loaded.values(), key=lambda m: m.last_used):
            if self.used_bytes + model.nbytes <= self.memory_bytes:
                break
            if m.name != self.default and m.name not in in_use:
                self._unload(m.name, "to make room for " + model.name)
        if self.used_bytes + model.nbytes > self.memory_bytes:
            raise EngineError(
                f"{model.nbytes / 2**20:.0f} MB more would pass the server's model memory cap of "
                f"{self.memory_bytes / 2**20:.0f} MB, and the models loaded are in use; try again later"
            )

    def _in_use(self) -> set[str]:
        return self.in_use() if self.in_use is not None else set()

    def sweep(self, now: float | None = None) -> list[str]:
        """Unload the models no live room uses that were last used ``idle_s`` ago or more."""
        if not self.idle_s:
            return []
        now = time.monotonic() if now is None else now
        in_use = self._in_use()
        gone = [
            m.name
            for m in self._loaded.values()
            if m.name != self.default and m.name not in in_use and now - m.last_used >= self.idle_s
        ]
        for name in gone:
            self._unload(name, f"idle for {self.idle_s:.0f} s")
        return gone

    def _unload(self, name: str, why: str) -> None:
        m = self._loaded.pop(name, None)
        if m is None:
            return
        self.unloads += 1
        log.info("model %s unloaded (%s; %.1f MB freed)", name, why, m.nbytes / 2**20)
        if m.G.mapping.w_avg.device.type == "cuda":
            torch.cuda.empty_cache()
