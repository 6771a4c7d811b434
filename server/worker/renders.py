"""Render jobs and downloads: a room's image rendered without a drag (a new image, undo/redo, the
first look after a restart), batched into one forward pass per generator (so per model); the
committed image as PNG, its latent, the frames of the last drag, for the HTTP downloads, and a
model's sample grid for the start page."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from server.core.jobs import EngineJob, FrameResult
from server.core.state import ImageInfo
from server.engine.generator import Generator
from server.engine.media import encode_jpeg, encode_png
from server.worker.base import WorkerBase
from server.worker.media import TrajectoryItem, _frames
from server.worker.models import LoadedModel
from server.worker.state import Outcome


class RenderJobs(WorkerBase):
    """RENDER jobs (engine thread) and the downloads (awaited on the event loop)."""

    # --- downloads (engine thread) --------------------------------------------------------------

    async def image_png(self, image: ImageInfo, room: str | None = None) -> bytes:
        """The committed image as PNG (rendered at full quality, not the streamed JPEG), with the
        room's tuned generator when ``room`` holds one for this image (loading its model first)."""
        await self.models.wait_loaded(image.model)
        return await self.call(self._png, image, room)

    async def latent_bytes(self, image: ImageInfo) -> bytes:
        """The committed image's W+ as safetensors bytes (in its model's latent format)."""
        model = await self.models.wait_loaded(image.model)
        return await self.call(model.latents.file, image)

    async def samples_jpeg(self, name: str, seeds: tuple[int, ...] = (0, 1, 2, 3), size: int = 96) -> bytes:
        """A 2x2 grid of ``name``'s images of ``seeds``, each ``size`` px, as JPEG (the start page's
        model picker); loads the model when it is not loaded."""
        model = await self.models.wait_loaded(name)
        return await self.call(self._samples, model, seeds, size)

    async def trajectory(self, room_id: str) -> list[TrajectoryItem]:
        """The frames of the room's last (or current) drag, oldest first (empty: none yet)."""
        return await self.call(self._trajectory_items, room_id)

    def _png(self, image: ImageInfo, room: str | None = None) -> bytes:
        model = self._model(image)
        G = model.G if room is None else self._generator(room, image)
        with torch.no_grad():
            img, _ = G.synthesis(model.latents.image_ws(image), noise_mode="const")
        return encode_png(_frames(img)[0])

    def _samples(self, model: LoadedModel, seeds: tuple[int, ...], size: int) -> bytes:
        with torch.no_grad():
            ws = torch.cat([model.G.ws_from_seed(s) for s in seeds])
            img, _ = model.G.synthesis(ws, noise_mode="const")
        tiles = [Image.fromarray(f).resize((size, size), Image.LANCZOS) for f in _frames(img)]
        cols = 2 if len(tiles) > 1 else 1
        rows = (len(tiles) + cols - 1) // cols
        grid = Image.new("RGB", (cols * size, rows * size))
        for i, t in enumerate(tiles):
            grid.paste(t, ((i % cols) * size, (i // cols) * size))
        return encode_jpeg(np.asarray(grid), 85)

    def _trajectory_items(self, room_id: str) -> list[TrajectoryItem]:
        t = self._trajectories.get(room_id)
        return [] if t is None else t.frames()

    # --- engine thread ---------------------------------------------------------------------------

    def _render_all(self, jobs: list[EngineJob]) -> list[Outcome]:
        outcomes, ready = [], []
        groups: dict[int, tuple[Generator, list[tuple[EngineJob, torch.Tensor]]]] = {}
        for job in jobs:
            try:
                ws = self._room_ws(self._state(job.room), job.image)
                G = self._generator(job.room, job.image)
            except Exception as e:
                outcomes.append(self._failed(job, e))
                continue
            groups.setdefault(id(G), (G, []))[1].append((job, ws))
        for G, ready in groups.values():  # one forward pass per generator (shared, or a room's tuned)
            t0 = self._clock()
            try:
                with torch.no_grad():
                    img, _ = G.synthesis(torch.cat([ws for _, ws in ready]), noise_mode="const")
                frames = _frames(img)
            except Exception as e:
                outcomes += [self._failed(job, e) for job, _ in ready]
                continue
            for (job, _), frame in zip(ready, frames, strict=True):
                outcomes.append(self._guard(job, lambda j, f=frame: Outcome(j, FrameResult(self._jpeg(f)))))
            self._measure(("render", ""), t0, len(ready))
            self.stats.renders += len(ready)
        return outcomes
