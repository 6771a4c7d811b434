"""W+ latents as safetensors bytes: the format the server stores and serves, and the CLI writes.

One tensor ``w_plus`` [1, num_ws, w_dim] float32; metadata ``format`` "livedrag.latent",
``version`` "1", ``model`` (the generator's name) and optional extra JSON-encoded fields. The
bytes are identical to what ``server.worker.latents`` writes for rooms, so a latent written by
``livedrag invert`` can be uploaded to or compared with a room's latent.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

LATENT_FORMAT = "livedrag.latent"


class LatentError(ValueError):
    """Latent bytes that cannot be used (unreadable, wrong shape, not finite)."""


def latent_to_bytes(w_plus: torch.Tensor, model: str, extra: dict | None = None) -> bytes:
    """W+ [1, num_ws, w_dim] -> safetensors bytes; ``extra`` values are stored as JSON strings."""
    if w_plus.ndim != 3 or w_plus.shape[0] != 1:
        raise LatentError(f"a latent must be [1, num_ws, w_dim], got {list(w_plus.shape)}")
    w = w_plus.detach().to("cpu", torch.float32).contiguous()
    meta = {"format": LATENT_FORMAT, "version": "1", "model": model}
    for k, v in (extra or {}).items():
        if k in meta:
            raise ValueError(f"extra metadata may not override {k!r}")
        meta[str(k)] = json.dumps(v)
    return st_save({"w_plus": w}, metadata=meta)


def latent_from_bytes(data: bytes, num_ws: int, w_dim: int) -> torch.Tensor:
    """safetensors bytes -> W+ [1, num_ws, w_dim] float32 on the CPU (shape and values checked)."""
    try:
        w = st_load(bytes(data))["w_plus"]
    except Exception as e:  # safetensors raises several types for damaged data
        raise LatentError(f"latent is unreadable: {e}") from None
    if tuple(w.shape) != (1, num_ws, w_dim):
        raise LatentError(f"latent has shape {list(w.shape)}; this model needs [1, {num_ws}, {w_dim}]")
    w = w.float()
    if not torch.isfinite(w).all():
        raise LatentError("latent has NaN or infinite values")
    return w


def save_latent(path: str | Path, w_plus: torch.Tensor, model: str, extra: dict | None = None) -> Path:
    """Write a latent file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(latent_to_bytes(w_plus, model, extra))
    tmp.replace(path)
    return path


def load_latent(path: str | Path, num_ws: int, w_dim: int) -> torch.Tensor:
    """Read a latent file written by ``save_latent``, the server or ``livedrag drag --latent``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"latent file not found: {path}")
    return latent_from_bytes(path.read_bytes(), num_ws, w_dim)
