"""The worker's side of crash recovery (checkpoints of a running drag) and of the W / W+ choice."""

from __future__ import annotations

import torch

from server.core.state import Status
from server.storage.manager import RoomManager
from server.storage.store import Store
from server.worker.latents import latent_from_bytes
from server.worker.modes import EngineMode
from tests.server.worker.test_worker import CountingSession, Env, until


async def test_a_running_drag_stores_checkpoints_that_a_crash_keeps(G, tmp_path):
    """With checkpoint_s=0 every frame after the first stores its latent; when the server dies
    mid-drag (no orderly stop), a new server on the same store commits the last checkpoint, which
    is the latent that frame showed, and reports the drag as interrupted."""
    env = Env(
        G, store=Store(tmp_path), modes={"optimize": EngineMode("optimize", CountingSession)}, checkpoint_s=0
    )
    rid, ada = env.room()
    env.drag(rid, ada, max_steps=10000)
    env.worker.start()
    await until(lambda: len(env.hub.of(rid, "frame")) >= 6)
    await env.worker.stop(commit=False)  # the process dies: nothing is finished
    room = env.manager.rooms[rid]
    assert room.status is Status.RUNNING
    step, key, _ = room._checkpoint
    assert step >= 5

    after = RoomManager(Store(tmp_path))
    after.load()
    back = after.open(rid)
    assert back.status is Status.IDLE and back.image.latent == key
    assert back.interrupted == {"kind": "drag", "drag": 1, "step": step, "by": ada}
    w = latent_from_bytes(after.store.get_latent(key), G.num_ws, G.w_dim)
    assert torch.allclose(
        w, G.ws_from_seed(1, truncation_psi=0.7) + (step - 1)
    )  # frame `step` shows w0 + step-1


async def test_checkpoints_are_spaced_by_checkpoint_s(G, tmp_path):
    """With a long checkpoint_s no frame of a short drag stores one."""
    env = Env(
        G,
        store=Store(tmp_path),
        modes={"optimize": EngineMode("optimize", CountingSession)},
        checkpoint_s=3600,
    )
    rid, ada = env.room()
    env.drag(rid, ada, max_steps=10000)
    env.worker.start()
    await until(lambda: len(env.hub.of(rid, "frame")) >= 5)
    assert env.manager.rooms[rid]._checkpoint is None
    await env.worker.stop()


async def test_space_w_reaches_the_session_and_a_change_waits_for_the_next_drag(G):
    """A drag started with space "w" runs a DragGAN session in W; switching to "w+" while it runs
    neither fails it nor changes it; the next drag uses W+."""
    env = Env(G)
    rid, ada = env.room()
    env.send(rid, ada, {"t": "set_params", "params": {"space": "w"}})
    env.drag(rid, ada, max_steps=10000)
    env.worker.start()
    await until(lambda: len(env.hub.of(rid, "frame")) >= 3)
    session = await env.worker.call(lambda: env.worker._rooms[rid].session)
    assert session.options.space == "w"
    env.send(rid, ada, {"t": "set_params", "params": {"space": "w+", "lr": 0.001}})
    n = len(env.hub.of(rid, "frame"))
    await until(lambda: len(env.hub.of(rid, "frame")) >= n + 3)
    assert env.status(rid) is Status.RUNNING
    assert session.options.space == "w" and session.options.lr == 0.001
    env.send(rid, ada, {"t": "stop"})
    await until(lambda: env.status(rid) is Status.IDLE)
    env.send(rid, ada, {"t": "start"})
    await until(lambda: env.worker._rooms[rid].session is not None and env.worker._rooms[rid].drag == 2)
    assert env.worker._rooms[rid].session.options.space == "w+"
    await env.worker.stop()
