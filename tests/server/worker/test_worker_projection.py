"""The worker's projections: batched steps, one room's failure isolated, a failed one commits nothing."""

from __future__ import annotations

import numpy as np
import torch

from server.core.state import Status
from server.engine.generator import Generator
from server.engine.media import encode_png
from server.engine.session import StepResult
from server.worker.projector import Projector
from tests.server.worker.test_worker import RES, Env, until


class FakeSession:
    """Projects nowhere: its latent moves by 1 per step; a 'bad' one raises when stepped."""

    def __init__(self, G: Generator, target: np.ndarray, bad: bool) -> None:
        self.w = G.mapping.w_avg.detach().cpu().expand(1, G.num_ws, G.w_dim).clone()
        self.target, self.bad, self.k, self.done = target, bad, 0, False

    def step(self) -> StepResult:
        if self.bad:
            raise RuntimeError("this picture breaks the engine")
        self.k += 1
        self.done = self.k >= 3
        self.w = self.w + 1
        return StepResult(
            self.target, [], [], self.k, self.done, "max_steps" if self.done else None, 0.5, 0.0
        )

    def latent(self) -> torch.Tensor:
        return self.w

    def psnr(self) -> float:
        return 30.0


class FakeProjector(Projector):
    """Sessions whose target's first pixel says whether they fail; batches fail when one does."""

    def __init__(self, G: Generator) -> None:
        super().__init__(G)
        self.batches: list[int] = []

    def upload_session(self, target, method, max_steps):
        return FakeSession(self.G, target, bad=bool(target[0, 0, 0] == 255))

    def step_many(self, sessions):
        self.batches.append(len(sessions))
        if len(sessions) > 1 and any(s.bad for s in sessions):
            raise RuntimeError("the batched pass failed")  # before any session moved, like a forward pass
        return [s.step() for s in sessions]


def start(env: Env, room: str, value: int) -> None:
    png = encode_png(np.full((RES, RES, 3), value, np.uint8))
    info = env.manager.store.put_upload(png, RES, RES)
    env.hub.dispatch(env.manager.rooms[room], env.manager.start_upload(room, info, "optimize", 3))
    env.worker.wake()


async def test_a_failing_projection_commits_nothing_and_spares_the_other_room(G):
    """Two rooms project in one batch; the one that fails ends with error, the other commits."""
    projector = FakeProjector(G)
    env = Env(G, projector=projector)
    good, _ = env.room(seed=1)
    bad, _ = env.room(seed=2)
    start(env, good, 10)
    start(env, bad, 255)
    env.worker.start()
    try:
        await until(lambda: env.status(good) is Status.IDLE and env.status(bad) is Status.IDLE)
    finally:
        await env.worker.stop()
    assert env.manager.rooms[good].history.to_wire() == {"index": 1, "size": 2}
    assert env.manager.rooms[good].history.current.kind == "upload"
    assert env.manager.rooms[bad].history.to_wire() == {"index": 0, "size": 1}
    assert [m["reason"] for m in env.hub.of(bad, "status") if m["status"] == "idle"] == ["error"]
    assert "breaks the engine" in env.hub.of(bad, "error")[0]["message"]
    frames = [f for f in env.hub.of(good, "frame") if f["step"] > 0]
    assert [f["step"] for f in frames] == [1, 2, 3] and frames[0]["psnr"] == 30.0
    assert 2 in projector.batches  # both rooms were stepped in one call at first
    latent = env.manager.rooms[good].image.latent
    assert latent is not None and env.manager.store.get_latent(latent) is not None
