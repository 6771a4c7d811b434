"""Convert foreign StyleGAN2 checkpoints into livedrag's native safetensors format, once.

Accepted inputs, told apart by their content (never by the file name):
  * NVIDIA network pickles (``.pkl``) from stylegan2-ada-pytorch and the stylegan3 repository:
    a snapshot dict (``G``, ``D``, ``G_ema``, ``augment_pipe``, ``training_set_kwargs``), a dict
    holding only ``G_ema``, or a bare ``G_ema``. Read by ``convert_nvidia`` without executing the
    pickled source code and without NVIDIA's ``dnnlib`` / ``torch_utils``.
  * rosinality stylegan2-pytorch checkpoints (``torch.save`` of ``{"g_ema": state_dict, ...}``),
    read with ``torch.load(weights_only=True)`` and renamed by ``convert_rosinality``.

Every parameter is checked against ``Generator(cfg)`` (missing, unexpected and mis-shaped keys are
errors that name the key) before anything is written. The output records where it came from
(source sha256, format, class name, original kwargs) in its safetensors metadata.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from server import __version__

from .checkpoint import CheckpointError, build_generator, save_generator
from .convert_nvidia import read_nvidia_pickle
from .convert_rosinality import read_rosinality
from .generator import Generator

# torch.save's legacy (pre-zip) format starts with this pickled magic number.
_TORCH_LEGACY_MAGIC = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)


@dataclass
class Converted:
    """A converted generator and the provenance recorded with it."""

    G: Generator
    source: dict  # format, sha256, file name, class name, original kwargs ...


def sniff_format(head: bytes) -> str:
    """``"torch"`` (torch.save archive), ``"safetensors"`` or ``"pickle"`` from a file's first bytes."""
    if head[:4] == b"PK\x03\x04" or head.startswith(_TORCH_LEGACY_MAGIC):
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return "safetensors"
    return "pickle"


def load_foreign(path: str | Path, name: str | None = None) -> Converted:
    """Read a foreign checkpoint into a livedrag Generator (nothing is written)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    data = path.read_bytes()
    if not data:
        raise CheckpointError(f"{path} is empty")
    name = path.stem if name is None else name
    kind = sniff_format(data[:32])
    try:
        if kind == "safetensors":
            raise CheckpointError(
                "already a safetensors file; livedrag loads it directly, no conversion needed"
            )
        read = read_rosinality if kind == "torch" else read_nvidia_pickle
        cfg, sd, info = read(data, name=name)
        G = build_generator(cfg, sd)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    info.update({"file": path.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)})
    return Converted(G, info)


def convert_file(
    src: str | Path, dst: str | Path, half: bool = False, name: str | None = None, overwrite: bool = False
) -> Converted:
    """Convert ``src`` to a livedrag ``.safetensors`` at ``dst``; returns the generator and provenance."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and not overwrite:
        raise ValueError(f"{dst} exists (pass --force to overwrite)")
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise ValueError("output must differ from input")
    out = load_foreign(src, name=name)
    out.source["converter"] = f"livedrag {__version__}"
    save_generator(out.G, dst, half=half, extra_meta={"source": json.dumps(out.source, sort_keys=True)})
    return out
