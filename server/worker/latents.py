"""Latents: each image's W+ on the device (from its seed, or from its stored latent), and new
latents serialised and stored.

A drag's result is the latent of its last frame (so what people saw is what is committed); it is
serialised (safetensors, ``{"w_plus": [1, num_ws, w_dim]}``), put in the store (content key:
sha256 of the bytes) and the room references it by that key. If the store fails, the bytes
stay in an in-memory cache, the key is still committed and the room's members get
``storage_failed``. The last ``LATENT_CACHE`` latents read or written stay in memory (undo and
redo without a store read).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import torch

from server.core.ids import latent_key
from server.core.state import ImageInfo
from server.engine import latent_io
from server.engine.generator import Generator
from server.engine.latent_io import latent_to_bytes
from server.storage.store import Store, StoreError
from server.worker.state import EngineError

log = logging.getLogger(__name__)

LATENT_CACHE = 64  # serialised latents kept in memory (undo/redo without a store read)


def latent_from_bytes(data: bytes, num_ws: int, w_dim: int) -> torch.Tensor:
    """Stored latent bytes -> W+ [1, num_ws, w_dim] float32 on the CPU (``latent_io``'s checks;
    a bad one is an EngineError: the room's job fails with the message)."""
    try:
        return latent_io.latent_from_bytes(data, num_ws, w_dim)
    except latent_io.LatentError as e:
        raise EngineError(f"stored {e}") from None


class Latents:
    """The worker's latents: serialised latents by key, the last ``LATENT_CACHE`` of them in memory
    in front of the store. Worker thread only."""

    def __init__(self, G: Generator, model_name: str, store: Store) -> None:
        self.G = G
        self.model_name = model_name
        self.store = store
        self.device = G.mapping.w_avg.device
        self.resolution = int(G.img_resolution)
        self._cache: OrderedDict[str, bytes] = OrderedDict()

    def clear(self) -> None:
        """Forget the latents kept in memory (the next reads go to the store)."""
        self._cache.clear()

    def image_ws(self, image: ImageInfo) -> torch.Tensor:
        """W+ [1, num_ws, w_dim] on the device for an image (seed or committed latent)."""
        G = self.G
        if image.model != self.model_name or (image.w, image.h) != (self.resolution, self.resolution):
            raise EngineError(
                f"this room's image comes from model {image.model!r} ({image.w}x{image.h}); "
                f"this server runs {self.model_name!r} ({self.resolution}x{self.resolution})"
            )
        if image.latent is None:
            if image.seed is None:
                raise EngineError("the image has neither a seed nor a latent")
            with torch.no_grad():
                return G.ws_from_seed(image.seed, truncation_psi=image.truncation)
        data = self.data(image.latent)
        if data is None:
            raise EngineError(f"latent {image.latent[:12]}... is missing from the store")
        return latent_from_bytes(data, G.num_ws, G.w_dim).to(self.device)

    def file(self, image: ImageInfo) -> bytes:
        """The image's W+ as safetensors bytes: its stored latent, or its seed's W+ serialised."""
        if image.latent is not None:
            data = self.data(image.latent)
            if data is not None:
                return data
        return latent_to_bytes(self.image_ws(image), self.model_name)

    def data(self, key: str) -> bytes | None:
        """A latent's bytes, from memory or the store (None: not stored)."""
        data = self._cache.get(key)
        if data is not None:
            self._cache.move_to_end(key)
            return data
        try:
            data = self.store.get_latent(key)
        except StoreError as e:
            raise EngineError(str(e)) from None
        if data is not None:
            self.remember(key, data)
        return data

    def remember(self, key: str, data: bytes) -> None:
        self._cache[key] = data
        self._cache.move_to_end(key)
        while len(self._cache) > LATENT_CACHE:
            self._cache.popitem(last=False)

    def put(self, w_plus: torch.Tensor) -> tuple[str, bool]:
        """Serialise a W+ [1, num_ws, w_dim] and store it -> (its key, whether the store failed:
        then the bytes stay in memory under the same key)."""
        data = latent_to_bytes(w_plus, self.model_name)
        key, failed = latent_key(data), False
        try:
            key = self.store.put_latent(data)
        except StoreError as e:
            log.error("could not store a latent: %s (kept in memory)", e)
            failed = True
        self.remember(key, data)
        return key, failed
