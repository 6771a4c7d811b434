"""The worker: drags stepped on the engine thread, frames, commits, failures, fairness, shutdown."""

from __future__ import annotations

import asyncio
import io
import itertools
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from server.core.limits import RoomLimits
from server.core.outgoing import Outgoing
from server.core.protocol import PROTOCOL_VERSION, decode_hello, encode
from server.core.room import Room
from server.core.state import ImageInfo, Status
from server.edge.fanout import Hub
from server.engine.drag import DragSession, step_batch
from server.engine.generator import Generator
from server.engine.media import decode_image
from server.engine.session import StepResult
from server.storage.manager import RoomManager
from server.storage.store import Store, StoreError
from server.worker.latents import latent_from_bytes
from server.worker.loop import Worker
from server.worker.media import trajectory_gif
from server.worker.modes import EngineMode, SessionSpec, _create_drag, default_modes
from tests.server.live import tiny_predictor

RES = 32


class RecordingHub(Hub):
    """Keeps every dispatched message in order, with its room."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, Outgoing]] = []

    def dispatch(self, room: Room, outs: list[Outgoing]) -> None:
        self.log += [(room.id, o) for o in outs]

    def of(self, room_id: str, t: str) -> list[dict]:
        return [o.msg for r, o in self.log if r == room_id and o.msg["t"] == t]


class Env:
    """A manager, a recording hub and a worker over a tiny generator."""

    def __init__(self, G: Generator, store: Store | None = None, **worker_kw) -> None:
        self.manager = RoomManager(store or Store(None), RoomLimits())
        self.hub = RecordingHub()
        worker_kw.setdefault("max_fps", 1000.0)
        self.worker = Worker(G, self.manager, self.hub, model_name=G.cfg.name, **worker_kw)
        self.caps: dict[str, str] = {}
        self.ids = 0

    def room(self, seed: int = 1) -> tuple[str, str]:
        created = self.manager.create(ImageInfo(self.worker.model_name, RES, RES, seed=seed))
        hello = decode_hello(
            encode({"t": "hello", "v": PROTOCOL_VERSION, "cap": created.edit_token, "name": "Ada"})
        )
        joined = self.manager.join(created.room_id, hello)
        return created.room_id, joined.member_id

    def send(self, room_id: str, member: str, msg: dict) -> list[Outgoing]:
        self.ids += 1
        out = self.manager.receive(room_id, member, encode({**msg, "id": self.ids}))
        self.hub.dispatch(self.manager.rooms[room_id], out)
        self.worker.wake()
        return out

    def drag(
        self, room_id: str, member: str, max_steps: int, handle=(10.0, 10.0), target=(16.0, 12.0)
    ) -> None:
        self.send(
            room_id, member, {"t": "add_pair", "pair": "p1", "handle": list(handle), "target": list(target)}
        )
        self.send(room_id, member, {"t": "set_params", "params": {"max_steps": max_steps}})
        out = self.send(room_id, member, {"t": "start"})
        assert [o.msg["t"] for o in out] == ["op", "status"], out

    def status(self, room_id: str) -> Status:
        return self.manager.rooms[room_id].status


async def until(pred: Callable[[], bool], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


class CountingSession:
    """A fake session whose latent counts its optimiser updates: w0 + k after k steps."""

    def __init__(self, spec: SessionSpec) -> None:
        self.w0, self.k = spec.w_plus.detach().cpu().clone(), 0
        self._h, self._t = list(spec.handles), list(spec.targets)

    handles = property(lambda self: list(self._h))
    targets = property(lambda self: list(self._t))
    step_index = property(lambda self: self.k)
    done = property(lambda self: False)

    def step(self) -> StepResult:
        self.k += 1
        frame = np.full((RES, RES, 3), 10 * self.k % 256, np.uint8)
        return StepResult(frame, list(self._h), list(self._t), self.k, False, None, 0.0, 0.0)

    def render(self) -> np.ndarray:
        return np.zeros((RES, RES, 3), np.uint8)

    def latent(self) -> torch.Tensor:
        return self.w0 + self.k

    def set_points(self, handles, targets) -> None:
        self._h, self._t = list(handles), list(targets)

    def set_mask(self, mask) -> None:
        pass

    def set_options(self, **changes) -> None:
        pass


async def test_a_drag_streams_frames_and_commits_its_last_frame(G):
    """Each step sends a JPEG frame; the finish commits the latent of the last frame to the store."""
    env = Env(G)
    rid, ada = env.room()
    env.drag(rid, ada, max_steps=4)
    env.worker.start()
    await until(lambda: env.status(rid) is Status.IDLE and env.hub.of(rid, "status")[-1]["status"] == "idle")
    frames = [f for f in env.hub.of(rid, "frame") if f["drag"] == 1]
    assert [f["step"] for f in frames] == [1, 2, 3, 4]
    assert decode_image(frames[-1]["jpeg"]).shape == (RES, RES, 3)
    assert set(frames[-1]["handles"]) == {"p1"}
    finish = env.hub.of(rid, "op")[-1]
    assert finish["op"] == "finish" and finish["patch"]["history"] == {"index": 1, "size": 2}
    key = finish["patch"]["image"]["latent"]
    w = latent_from_bytes(env.manager.store.get_latent(key), G.num_ws, G.w_dim)
    assert w.shape == (1, G.num_ws, G.w_dim)
    assert env.hub.of(rid, "status")[-1]["reason"] == "max_steps"
    await env.worker.stop()


async def test_the_committed_latent_is_the_one_the_last_frame_shows(G):
    """With n steps the committed latent is the start latent plus n-1 updates, not n."""
    env = Env(G, modes={"optimize": EngineMode("optimize", CountingSession)})
    rid, ada = env.room()
    env.drag(rid, ada, max_steps=5)
    env.worker.start()
    await until(lambda: env.status(rid) is Status.IDLE and env.hub.of(rid, "status")[-1]["status"] == "idle")
    key = env.manager.rooms[rid].image.latent
    w = latent_from_bytes(env.manager.store.get_latent(key), G.num_ws, G.w_dim)
    w0 = G.ws_from_seed(1, truncation_psi=0.7)
    assert torch.allclose(w, w0 + 4)
    await env.worker.stop()


async def test_a_failing_room_does_not_stop_the_others(G):
    """A step that raises ends that room's drag with an error; the other room finishes normally."""

    class BoomSession(DragSession):
        def _objective(self, feat):
            raise RuntimeError("injected failure")

    def create(spec: SessionSpec):
        session = _create_drag(spec)
        if spec.room == bad:
            session.__class__ = BoomSession
        return session

    env = Env(G, modes={"optimize": EngineMode("optimize", create, step_batch)})
    bad, ada = env.room(1)
    good, bob = env.room(2)
    env.drag(bad, ada, max_steps=50)
    env.drag(good, bob, max_steps=5)
    env.worker.start()
    await until(lambda: env.status(good) is Status.IDLE and env.status(bad) is Status.IDLE)
    bad_status = env.hub.of(bad, "status")[-1]
    assert bad_status["reason"] == "error" and "injected failure" in bad_status["message"]
    assert any(e["code"] == "engine_failed" for e in env.hub.of(bad, "error"))
    assert env.hub.of(good, "status")[-1]["reason"] == "max_steps"
    assert [f["step"] for f in env.hub.of(good, "frame") if f["drag"] == 1] == [1, 2, 3, 4, 5]
    await env.worker.stop()


async def test_rooms_take_turns_when_the_tick_budget_is_small(G):
    """With room for one job per tick, two running rooms alternate: neither waits two turns in a row."""
    env = Env(G, tick_budget_s=1e-9)
    a, ada = env.room(1)
    b, bob = env.room(2)
    env.drag(a, ada, max_steps=8)
    env.drag(b, bob, max_steps=8)
    env.worker.start()
    await until(lambda: env.status(a) is Status.IDLE and env.status(b) is Status.IDLE)
    order = [r for r, o in env.hub.log if o.msg["t"] == "frame" and o.msg["drag"] == 1]
    assert order.count(a) == order.count(b) == 8
    longest = max(len(list(run)) for _, run in itertools.groupby(order))
    assert longest <= 2, order
    await env.worker.stop()


async def test_rooms_sharing_a_mode_are_stepped_in_one_batch(G):
    """With a generous budget, two running rooms advance together (fewer ticks than steps)."""
    env = Env(G, tick_budget_s=10.0)
    a, ada = env.room(1)
    b, bob = env.room(2)
    env.drag(a, ada, max_steps=6)
    env.drag(b, bob, max_steps=6)
    env.worker.start()
    await until(lambda: env.status(a) is Status.IDLE and env.status(b) is Status.IDLE)
    assert env.worker.stats.steps == 12
    assert env.worker.stats.ticks <= 9  # 6 batched steps + renders + finish, not 12+
    await env.worker.stop()


async def test_predict_mode_ends_the_drag_with_a_clear_error(G):
    """Without a predictor for the model, a predict drag ends at once with reason error."""
    env = Env(G)
    rid, ada = env.room()
    env.send(rid, ada, {"t": "set_params", "params": {"mode": "predict"}})
    env.drag(rid, ada, max_steps=5)
    env.worker.start()
    await until(lambda: env.status(rid) is Status.IDLE and env.hub.of(rid, "status")[-1]["status"] == "idle")
    status = env.hub.of(rid, "status")[-1]
    assert status["reason"] == "error" and "predictor not available for this model" in status["message"]
    assert env.manager.rooms[rid].history.to_wire()["size"] == 1  # nothing committed
    assert env.worker.available_modes == ["optimize"]
    await env.worker.stop()


async def test_predict_mode_runs_when_a_predictor_is_registered(G):
    """With a predictor bundle for the model, predict drags step, stream frames and commit."""
    env = Env(G, modes=default_modes(tiny_predictor(G)))
    assert env.worker.available_modes == ["optimize", "predict"]
    rid, ada = env.room()
    env.send(rid, ada, {"t": "set_params", "params": {"mode": "predict", "r2": 4.0}})
    env.drag(rid, ada, max_steps=3)
    env.worker.start()
    await until(lambda: env.status(rid) is Status.IDLE and env.hub.of(rid, "status")[-1]["status"] == "idle")
    assert env.hub.of(rid, "status")[-1]["reason"] == "max_steps"
    assert [f["step"] for f in env.hub.of(rid, "frame") if f["step"] > 0] == [1, 2, 3]
    assert env.manager.rooms[rid].history.to_wire()["size"] == 2
    await env.worker.stop()


async def test_a_predict_drag_runs_past_the_predictor_files_budget_to_the_rooms_cap(G):
    """The predictor file's own step budget (here 2 steps) no longer ends a drag: it runs until the
    room's max_steps (reason max_steps) when nothing else ends it first."""
    env = Env(G, modes=default_modes(tiny_predictor(G, max_steps=2, budget_rule="fixed", lost_ratio=None)))
    rid, ada = env.room()
    env.send(rid, ada, {"t": "set_params", "params": {"mode": "predict", "r2": 4.0}})
    env.drag(rid, ada, max_steps=6)
    env.worker.start()
    await until(lambda: env.status(rid) is Status.IDLE and env.hub.of(rid, "status")[-1]["status"] == "idle")
    assert env.hub.of(rid, "status")[-1]["reason"] == "max_steps"
    assert [f["step"] for f in env.hub.of(rid, "frame") if f["step"] > 0] == list(range(1, 7))
    await env.worker.stop()


async def test_a_predict_drag_that_comes_no_closer_ends_stalled(G):
    """A predictor that never moves anything (untrained): the drag ends by itself with reason stalled
    after the stall rule's window (8 steps after the first), well before the room's cap."""
    env = Env(G, modes=default_modes(tiny_predictor(G, lost_ratio=None)))
    rid, ada = env.room()
    env.send(rid, ada, {"t": "set_params", "params": {"mode": "predict", "r2": 4.0}})
    env.drag(rid, ada, max_steps=50)
    env.worker.start()
    await until(lambda: env.status(rid) is Status.IDLE and env.hub.of(rid, "status")[-1]["status"] == "idle")
    status = env.hub.of(rid, "status")[-1]
    assert status["reason"] == "stalled" and status["step"] == 9
    await env.worker.stop()


async def test_a_lost_handle_reaches_the_room(G):
    """A handle point tracking loses is named in the frame's lost list and ends the drag with reason
    lost; the drag's image is committed. (A predictor that changes the image and a rule so strict
    that any change of the handle's feature counts as lost make it happen at the second step.)"""
    env = Env(G, modes=default_modes(tiny_predictor(G, moving=True, lost_ratio=1e-6)))
    rid, ada = env.room()
    env.send(rid, ada, {"t": "set_params", "params": {"mode": "predict", "r2": 4.0}})
    env.drag(rid, ada, max_steps=50)
    env.worker.start()
    await until(lambda: env.status(rid) is Status.IDLE and env.hub.of(rid, "status")[-1]["status"] == "idle")
    frames = [f for f in env.hub.of(rid, "frame") if f["step"] > 0]
    assert [f.get("lost") for f in frames] == [None, ["p1"]]
    assert frames[-1]["status"] == "stopping"
    status = env.hub.of(rid, "status")[-1]
    assert status["reason"] == "lost" and status["step"] == 2
    assert env.manager.rooms[rid].history.to_wire()["size"] == 2
    await env.worker.stop()


async def test_a_handle_placed_mid_drag_is_tracked_from_its_new_place(G):
    """Moving a handle during a drag restarts its tracking there (later frames show it near)."""
    env = Env(G, max_fps=60.0)
    rid, ada = env.room()
    env.drag(rid, ada, max_steps=200)
    env.worker.start()
    await until(lambda: len(env.hub.of(rid, "frame")) >= 3)
    env.send(rid, ada, {"t": "move_point", "pair": "p1", "which": "handle", "pos": [25.0, 25.0]})
    n = len(env.hub.of(rid, "frame"))
    await until(lambda: len(env.hub.of(rid, "frame")) >= n + 3)
    x, y = env.hub.of(rid, "frame")[-1]["handles"]["p1"]
    assert abs(x - 25.0) <= 4 and abs(y - 25.0) <= 4
    await env.worker.stop()


async def test_stop_commits_running_drags(G):
    """At shutdown a running drag is finished as stopped and its result committed."""
    env = Env(G)
    rid, ada = env.room()
    env.drag(rid, ada, max_steps=10000)
    env.worker.start()
    await until(lambda: len(env.hub.of(rid, "frame")) >= 4)
    await env.worker.stop()
    room = env.manager.rooms[rid]
    assert room.status is Status.IDLE and room.history.to_wire()["size"] == 2
    assert env.hub.of(rid, "status")[-1]["reason"] == "stopped"
    assert env.manager.store.get_latent(room.image.latent) is not None


async def test_the_trajectory_is_bounded_and_becomes_a_gif(G):
    """Past the cap the trajectory is thinned out but keeps the last frame; it encodes as a GIF."""
    env = Env(G, trajectory_frames=4)
    rid, ada = env.room()
    env.drag(rid, ada, max_steps=20)
    env.worker.start()
    await until(lambda: env.status(rid) is Status.IDLE)
    items = await env.worker.trajectory(rid)
    assert 2 <= len(items) <= 5
    assert items[-1].jpeg == env.hub.of(rid, "frame")[-1]["jpeg"]
    with Image.open(io.BytesIO(trajectory_gif(items))) as gif:
        assert gif.n_frames == len(items) and gif.size == (256, 256)
    await env.worker.stop()


async def test_undo_and_redo_render_from_the_store(G, tmp_path):
    """After undo and redo the image is rendered again, the redo from the stored latent."""
    env = Env(G, store=Store(tmp_path))
    rid, ada = env.room()
    env.drag(rid, ada, max_steps=3)
    env.worker.start()
    await until(lambda: env.status(rid) is Status.IDLE)
    last = env.hub.of(rid, "frame")[-1]["jpeg"]
    env.send(rid, ada, {"t": "undo"})
    await until(lambda: not env.manager.rooms[rid].render_pending)
    await env.worker.call(env.worker._latents.clear)  # force a store read
    await env.worker.call(env.worker._rooms.clear)
    env.send(rid, ada, {"t": "redo"})
    await until(lambda: not env.manager.rooms[rid].render_pending)
    redone = env.hub.of(rid, "frame")[-1]["jpeg"]
    assert np.abs(decode_image(redone).astype(int) - decode_image(last).astype(int)).mean() < 3
    png = await env.worker.image_png(env.manager.rooms[rid].image)
    assert Image.open(io.BytesIO(png)).size == (RES, RES)
    await env.worker.stop()


async def test_a_store_failure_keeps_the_edit_in_memory(G, monkeypatch):
    """If the latent cannot be stored, the drag still commits (from memory) and members are told."""
    env = Env(G)
    rid, ada = env.room()

    def broken(data: bytes) -> str:
        raise StoreError("disk full")

    monkeypatch.setattr(env.manager.store, "put_latent", broken)
    env.drag(rid, ada, max_steps=3)
    env.worker.start()
    await until(lambda: env.status(rid) is Status.IDLE and env.hub.of(rid, "status")[-1]["status"] == "idle")
    assert any(e["code"] == "storage_failed" for e in env.hub.of(rid, "error"))
    image = env.manager.rooms[rid].image
    assert image.latent is not None
    assert len(await env.worker.latent_bytes(image)) > 0
    await env.worker.stop()


async def test_rooms_nobody_is_in_are_rendered_when_someone_joins(G):
    """A restored or new room with no members costs nothing until a member joins."""
    env = Env(G)
    created = env.manager.create(ImageInfo(env.worker.model_name, RES, RES, seed=5))
    env.worker.start()
    await asyncio.sleep(0.1)
    assert env.worker.stats.renders == 0
    hello = decode_hello(encode({"t": "hello", "v": PROTOCOL_VERSION, "cap": created.view_token, "name": ""}))
    env.manager.join(created.room_id, hello)
    env.worker.wake()
    # the render counter moves on the worker thread before the frame reaches the room on the loop
    await until(lambda: env.manager.rooms[created.room_id].latest_frame is not None)
    assert env.worker.stats.renders == 1
    await env.worker.stop()


def test_the_servers_lost_ratio_setting_reaches_both_modes(G):
    """--lost-ratio / LIVEDRAG_LOST_RATIO: unset keeps the engine's calibrated rule (and a predictor
    file's own value), a number replaces it in both modes, at start and live, and 0 turns it off."""
    from server.cli import build_parser
    from server.cli.serve import settings_from_args
    from server.core.state import Params
    from server.edge.config import Settings
    from server.engine.stop_rules import LOST_RATIO

    assert Settings().lost_ratio is None and Settings.from_env({"LIVEDRAG_LOST_RATIO": "0"}).lost_ratio == 0.0
    assert settings_from_args(build_parser().parse_args(["serve", "--lost-ratio", "0.8"])).lost_ratio == 0.8
    with pytest.raises(ValueError, match="lost_ratio"):
        Settings(lost_ratio=-1.0)
    bundle = tiny_predictor(G, lost_ratio=0.7)
    spec = SessionSpec("r", G, G.ws_from_seed(0), [(8.0, 8.0)], [(14.0, 8.0)], None, Params())
    for setting, optimize, predict in ((None, LOST_RATIO, 0.7), (0.5, 0.5, 0.5), (0.0, None, None)):
        modes = default_modes(bundle, lost_ratio=setting)
        assert modes["optimize"].create(spec).options.lost_ratio == optimize
        assert modes["predict"].create(spec).options.lost_ratio == predict
        live = modes["optimize"].options(Params(), RES)
        assert live.get("lost_ratio", LOST_RATIO) == optimize
