"""The worker's model pool: loads on first use, a memory cap that unloads the least recently used
unused models first, idle unloads, failures that stand for a while and are then retried."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch

from server.engine.generator import Generator
from server.storage.store import Store
from server.worker import models as models_mod
from server.worker.models import LoadedModel, ModelPool, ModelSpec, load_model, module_bytes
from server.worker.state import EngineError
from tests.conftest import tiny_config


def tiny(res: int) -> Generator:
    torch.manual_seed(res)
    return Generator(tiny_config(res)).eval().requires_grad_(False)


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "data")


def loaded(store: Store, name: str, res: int = 16, default: bool = False) -> LoadedModel:
    spec = ModelSpec(name, res, default=default)
    return load_model(spec, torch.device("cpu"), store, generator=tiny(res))


class Loader:
    """Loads tiny generators by spec; counts calls; fails the names in ``broken``."""

    def __init__(self, store: Store, broken: set[str] = frozenset()) -> None:
        self.store, self.broken, self.calls = store, set(broken), []

    def __call__(self, spec: ModelSpec) -> LoadedModel:
        self.calls.append(spec.name)
        if spec.name in self.broken:
            raise ValueError(f"{spec.name}: bad file")
        return load_model(spec, torch.device("cpu"), self.store, generator=tiny(spec.resolution))


def specs(*names: str) -> list[ModelSpec]:
    return [ModelSpec(n, 16) for n in names]


async def test_models_load_once_on_first_use(store):
    loader = Loader(store)
    pool = ModelPool(loaded(store, "base", default=True), specs("a"), loader=loader)
    with pytest.raises(EngineError, match="not loaded yet"):
        pool.get("a")
    t1, t2 = pool.ensure("a"), pool.ensure("a")
    assert t1 is t2  # one load in flight, however many rooms wait for it
    model = await pool.wait_loaded("a")
    assert model.name == "a" and model.resolution == 16 and loader.calls == ["a"]
    assert pool.ensure("a") is None and pool.get("a") is model
    with pytest.raises(EngineError, match="no model 'zzz'.*base, a"):
        pool.get("zzz")


async def test_failures_stand_for_a_while_then_retry(store, monkeypatch):
    loader = Loader(store, broken={"a"})
    pool = ModelPool(loaded(store, "base", default=True), specs("a"), loader=loader)
    with pytest.raises(EngineError, match="model a could not be loaded: a: bad file"):
        await pool.wait_loaded("a")
    assert pool.failure("a") and pool.ensure("a") is None and loader.calls == ["a"]
    loader.broken.clear()
    monkeypatch.setattr(models_mod, "RETRY_S", 0.0)
    time.sleep(0.01)
    assert (await pool.wait_loaded("a")).name == "a" and loader.calls == ["a", "a"]
    assert pool.failure("a") is None


async def test_the_memory_cap_unloads_unused_models_first(store):
    base = loaded(store, "base", default=True)
    one = module_bytes(tiny(16))
    in_use: set[str] = set()
    pool = ModelPool(
        base,
        specs("a", "b", "c"),
        loader=Loader(store),
        memory_bytes=base.nbytes + 2 * one,
        in_use=lambda: set(in_use),
    )
    await pool.wait_loaded("a")
    await pool.wait_loaded("b")
    in_use.add("b")
    pool.get("a").last_used -= 10  # least recently used: goes first
    await pool.wait_loaded("c")
    assert pool.loaded("a") is None and pool.loaded("b") and pool.loaded("c") and pool.loaded("base")
    assert pool.used_bytes <= pool.memory_bytes
    in_use.add("c")
    with pytest.raises(EngineError, match="memory cap"):  # everything loaded is in use
        await pool.wait_loaded("a")
    assert pool.loaded("b") and pool.loaded("c")


async def test_idle_models_unload_but_never_the_default_or_one_in_use(store):
    in_use = {"b"}
    pool = ModelPool(
        loaded(store, "base", default=True),
        specs("a", "b"),
        loader=Loader(store),
        idle_s=60,
        in_use=lambda: in_use,
    )
    await asyncio.gather(pool.wait_loaded("a"), pool.wait_loaded("b"))
    assert pool.sweep(time.monotonic() + 30) == []
    assert pool.sweep(time.monotonic() + 61) == ["a"]
    assert pool.loaded("base") and pool.loaded("b") and pool.unloads == 1
    assert ModelPool(loaded(store, "x", default=True), idle_s=0).sweep(time.monotonic() + 1e9) == []


def test_names_must_be_unique(store):
    with pytest.raises(ValueError, match="two models are named 'base'"):
        ModelPool(loaded(store, "base", default=True), specs("base"))


def test_a_card_that_lies_about_the_resolution_is_refused(store):
    with pytest.raises(EngineError, match="draws 32 px, its card says 16"):
        load_model(ModelSpec("x", 16), torch.device("cpu"), store, generator=tiny(32))


async def test_rooms_of_different_models_never_share_a_batch(store):
    """Two rooms per model drag at once: every batched step holds sessions of one generator,
    and rooms of the same model are batched together."""
    from server.core.state import ImageInfo
    from server.storage.manager import RoomManager
    from server.worker.loop import Worker
    from server.worker.modes import EngineMode, optimize_mode
    from tests.server.worker.test_worker import RecordingHub, until

    batches: list[list[int]] = []
    base = optimize_mode(lost_ratio=0.0)

    def recording(sessions):
        batches.append(sorted({id(s.G) for s in sessions}) + [len(sessions)])
        return base.step_many(sessions)

    mode = EngineMode("optimize", base.create, recording, base.options)
    a = load_model(
        ModelSpec("a", 16, default=True),
        torch.device("cpu"),
        store,
        generator=tiny(16),
        modes={"optimize": mode},
    )
    b = load_model(
        ModelSpec("b", 32), torch.device("cpu"), store, generator=tiny(32), modes={"optimize": mode}
    )
    pool = ModelPool(a, [b.spec], loader=lambda spec: b)
    manager = RoomManager(store)
    hub = RecordingHub()
    worker = Worker(None, manager, hub, pool=pool, max_fps=1000.0, tick_budget_s=10.0)
    worker.start()
    try:
        rooms = []
        for name, res in (("a", 16), ("a", 16), ("b", 32), ("b", 32)):
            created = manager.create(ImageInfo(name, res, res, seed=len(rooms)))
            from server.core.protocol import PROTOCOL_VERSION, decode_hello, encode

            hello = decode_hello(
                encode({"t": "hello", "v": PROTOCOL_VERSION, "cap": created.edit_token, "name": "A"})
            )
            member = manager.join(created.room_id, hello).member_id
            for i, msg in enumerate(
                (
                    {"t": "add_pair", "pair": "p1", "handle": [3.0, 3.0], "target": [6.0, 5.0]},
                    {"t": "set_params", "params": {"max_steps": 3}},
                    {"t": "start"},
                )
            ):
                hub.dispatch(
                    manager.rooms[created.room_id],
                    manager.receive(created.room_id, member, encode({**msg, "id": i + 1})),
                )
            rooms.append(created.room_id)
        worker.wake()

        def done(r: str) -> bool:
            room = manager.rooms[r]
            return room.status.value == "idle" and len(room.history.entries) == 2

        await until(lambda: all(done(r) for r in rooms))
    finally:
        await worker.stop()
    assert batches and all(len(b) == 2 for b in batches)  # one generator id per batch, then its size
    assert max(b[-1] for b in batches) == 2  # the two rooms of a model stepped together
    for r in rooms:
        assert not [m for m in hub.of(r, "error")], hub.of(r, "error")
