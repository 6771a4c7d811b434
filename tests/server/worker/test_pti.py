"""Pivotal tuning in the server: a room's tuned generator copy renders, drags and exports its images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server.core.state import Status
from server.edge.config import Settings
from server.engine.generator import Generator
from server.engine.media import encode_jpeg, encode_png
from server.worker.latents import latent_from_bytes
from server.worker.media import _frames
from server.worker.modes import EngineMode, SessionSpec, _create_drag, _step_drag
from server.worker.projector import Projector
from tests.server.worker.test_worker import RES, Env, until

W_STEPS = 3  # W+ steps of each upload's projection


class PixelProjector(Projector):
    """The real projector with the pixel loss only (no detector network needed)."""

    def perceptual(self):
        return None

    def upload_session(self, target, method, max_steps, pti_steps=0):
        from server.engine.project import ProjectOptions, ProjectSession

        options = ProjectOptions(max_steps=max_steps, pti_steps=pti_steps, perceptual_weight=0.0, pti_lr=0.05)
        return ProjectSession(self.G, target, None, options)


def recording_modes(used: list[Generator]) -> dict[str, EngineMode]:
    """The optimize mode, remembering the generator each drag session was given."""

    def create(spec: SessionSpec):
        used.append(spec.G)
        return _create_drag(spec)

    return {"optimize": EngineMode("optimize", create, _step_drag)}


def idle(env: Env, rid: str) -> bool:
    return env.status(rid) is Status.IDLE and env.hub.of(rid, "status")[-1]["status"] == "idle"


async def project(env: Env, rid: str, value: int = 90, by: str | None = None) -> str:
    """Upload a flat picture to the room (sent by ``by``: theirs to undo), wait for its
    projection's commit; its latent key."""
    target = np.full((RES, RES, 3), value, np.uint8)
    target[: RES // 2] = 255 - value
    info = env.manager.store.put_upload(encode_png(target), RES, RES)
    env.hub.dispatch(env.manager.rooms[rid], env.manager.start_upload(rid, info, "optimize", W_STEPS, by))
    env.worker.wake()
    await until(lambda: idle(env, rid) and env.hub.of(rid, "op")[-1]["op"] == "finish")
    return env.manager.rooms[rid].image.latent


def render_jpeg(env: Env, G: Generator, key: str) -> bytes:
    w = latent_from_bytes(env.manager.store.get_latent(key), G.num_ws, G.w_dim)
    with torch.no_grad():
        img, _ = G.synthesis(w, noise_mode="const")
    return encode_jpeg(_frames(img)[0], env.worker.jpeg_quality)


async def rendered(env: Env, rid: str, ada: str, op: str) -> bytes:
    """Undo or redo, wait for the render job's frame; its JPEG bytes."""
    before = len(env.hub.of(rid, "frame"))
    env.send(rid, ada, {"t": op})
    await until(lambda: len(env.hub.of(rid, "frame")) > before and idle(env, rid))
    return env.hub.of(rid, "frame")[-1]["jpeg"]


def projection_frames(env: Env, rid: str) -> int:
    return len([f for f in env.hub.of(rid, "frame") if f["status"] in ("projecting", "stopping")])


async def test_a_tuned_upload_renders_drags_and_undoes_with_the_right_generator(G):
    """With pti_steps=2 the committed image renders, exports and drags with the room's tuned copy;
    a drag from it inherits the copy; undo to before the upload renders with the shared G."""
    used: list[Generator] = []
    env = Env(G, projector=PixelProjector(G), pti_steps=2, modes=recording_modes(used))
    rid, ada = env.room(seed=3)
    env.worker.start()
    key = await project(env, rid, by=ada)
    assert projection_frames(env, rid) == W_STEPS + 2  # the tuning steps are frames of the projection
    tuned = env.worker.tuned_generator(rid, key)
    assert tuned is not None and tuned is not G
    assert env.worker.tuned_rooms == {rid}
    assert all(p.grad is None and not p.requires_grad for p in tuned.parameters())
    tuned_jpeg, shared_jpeg = render_jpeg(env, tuned, key), render_jpeg(env, G, key)
    assert tuned_jpeg != shared_jpeg

    seed_jpeg = await rendered(env, rid, ada, "undo")  # the pre-upload image: the shared G
    assert env.manager.rooms[rid].image.latent is None
    assert await rendered(env, rid, ada, "redo") == tuned_jpeg
    room = env.manager.rooms[rid]
    png = await env.worker.image_png(room.image, rid)
    assert png != await env.worker.image_png(room.image)  # the shared G's export differs

    env.drag(rid, ada, max_steps=3)
    await until(lambda: idle(env, rid) and env.manager.rooms[rid].image.latent != key)
    assert used[-1] is tuned
    dragged = env.manager.rooms[rid].image.latent
    assert env.worker.tuned_generator(rid, dragged) is tuned  # inherited by the drag's result
    assert await rendered(env, rid, ada, "undo") == tuned_jpeg  # Ada's drag
    env.send(rid, ada, {"t": "undo"})  # her max_steps, then her pair (no new image)
    env.send(rid, ada, {"t": "undo"})
    assert await rendered(env, rid, ada, "undo") == seed_jpeg  # her upload
    assert env.manager.rooms[rid].image.latent is None
    await env.worker.stop()


async def test_the_room_cap_projects_a_second_room_without_tuning(G):
    """With pti_max_rooms=1 a second room's upload projects without pivotal tuning and renders with
    the shared G; deleting the first room drops its tuned copy."""
    env = Env(G, projector=PixelProjector(G), pti_steps=2, pti_max_rooms=1)
    first, _ = env.room(seed=1)
    second, bob = env.room(seed=2)
    env.worker.start()
    key1 = await project(env, first)
    key2 = await project(env, second, value=40, by=bob)
    assert projection_frames(env, first) == W_STEPS + 2
    assert projection_frames(env, second) == W_STEPS
    assert env.worker.tuned_generator(first, key1) is not None
    assert env.worker.tuned_generator(second, key2) is None
    assert env.worker.tuned_rooms == {first}
    await rendered(env, second, bob, "undo")
    assert await rendered(env, second, bob, "redo") == render_jpeg(env, G, key2)

    env.manager.delete(first)
    env.send(second, bob, {"t": "undo"})  # any tick forgets the deleted room
    await until(lambda: idle(env, second) and not env.worker.tuned_rooms)
    await env.worker.stop()


async def test_pti_off_keeps_the_shared_generator(G):
    """pti_steps=0 (the default): no tuning frames, no tuned copy, renders with the shared G."""
    env = Env(G, projector=PixelProjector(G))
    rid, ada = env.room(seed=1)
    env.worker.start()
    key = await project(env, rid, by=ada)
    assert projection_frames(env, rid) == W_STEPS
    assert env.worker.tuned_generator(rid, key) is None and not env.worker.tuned_rooms
    await rendered(env, rid, ada, "undo")
    assert await rendered(env, rid, ada, "redo") == render_jpeg(env, G, key)
    await env.worker.stop()


def test_settings_read_the_pti_flags_and_environment():
    """LIVEDRAG_PTI_STEPS / LIVEDRAG_PTI_MAX_ROOMS fill the settings, flags win, bad values are refused."""
    assert (Settings().pti_steps, Settings().pti_max_rooms) == (0, 4)
    env = {"LIVEDRAG_PTI_STEPS": "20", "LIVEDRAG_PTI_MAX_ROOMS": "2"}
    s = Settings.from_env(env)
    assert (s.pti_steps, s.pti_max_rooms) == (20, 2)
    assert Settings.from_env(env, pti_steps=5).pti_steps == 5
    with pytest.raises(ValueError, match="pti_max_rooms"):
        Settings(pti_max_rooms=0)
    with pytest.raises(ValueError, match="pti_steps"):
        Settings(pti_steps=-1)

    from server.cli import build_parser
    from server.cli.serve import settings_from_args

    args = build_parser().parse_args(["serve", "--pti-steps", "7", "--pti-max-rooms", "3"])
    s = settings_from_args(args)
    assert (s.pti_steps, s.pti_max_rooms) == (7, 3)
