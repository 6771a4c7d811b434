"""Native checkpoints: safetensors weights with the model config as JSON metadata.

A livedrag checkpoint is one ``.safetensors`` file whose metadata holds
``{"format": "livedrag.generator", "version": "1", "config": "<GeneratorConfig as JSON>"}``.
Loading never executes code. Tensors may be stored as fp16 to save space; they are loaded back
as float32 parameters (buffers keep their stored values).
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .generator import Generator, GeneratorConfig

FORMAT = "livedrag.generator"
FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used, with a message that says why."""


_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def weights_only_refusal(e: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one line of our own: the refused
    global by name where PyTorch gives one, else the first line of its message that is not its
    advice to load with weights_only=False (which would run the file's code: never do that)."""
    text = str(e)
    m = _REFUSED_GLOBAL.search(text)
    if m:
        return f"refused global {m.group(1)}: it could run code, and only tensors and plain data are loaded"
    for line in text.splitlines():
        line = line.strip()
        if line and "weights_only" not in line and "Weights only load failed" not in line:
            return line
    return type(e).__name__


def default_checkpoint_path() -> Path | None:
    """The embedded default model shipped in the package, or None if it is not built yet."""
    p = Path(str(resources.files("server") / "assets" / "synthfaces_g.safetensors"))
    return p if p.is_file() else None


def save_generator(
    G: Generator, path: str | Path, half: bool = False, extra_meta: dict | None = None
) -> Path:
    """Write ``G`` to ``path``; ``half=True`` stores floating tensors as fp16."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {}
    for k, v in G.state_dict().items():
        v = v.detach().cpu().contiguous()
        if half and v.is_floating_point():
            v = v.half()
        sd[k] = v
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "config": json.dumps(G.cfg.to_dict())}
    for k, v in (extra_meta or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(sd, str(tmp), metadata=meta)
    tmp.replace(path)  # atomic: a full disk or a crash never leaves a half-written checkpoint
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path} is not a safetensors file ({e}); convert pickles with `livedrag convert`"
        ) from e


def load_generator(
    path: str | Path | None = None, device: str | torch.device = "cpu", strict: bool = True
) -> Generator:
    """Load a livedrag generator checkpoint (default: the embedded SynthFaces model)."""
    if path is None:
        path = default_checkpoint_path()
        if path is None:
            raise CheckpointError(
                "no embedded default model in this checkout (server/assets/synthfaces_g.safetensors); "
                "pass --checkpoint or build it with scripts/train_generator.py"
            )
    path = Path(path)
    if path.suffix in (".pkl", ".pt", ".pth"):
        raise CheckpointError(
            f"{path} looks like a pickle; convert it first: livedrag convert {path} out.safetensors"
        )
    meta = read_metadata(path)
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(
            f"{path} is not a livedrag generator checkpoint (metadata format={meta.get('format')!r})"
        )
    try:
        cfg = GeneratorConfig.from_dict(json.loads(meta["config"]))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: bad generator config: {e}") from e
    return build_generator(cfg, load_file(str(path)), strict=strict, source=str(path)).to(device)


def build_generator(
    cfg: GeneratorConfig, sd: dict[str, torch.Tensor], strict: bool = True, source: str = ""
) -> Generator:
    """``Generator(cfg)`` holding ``sd`` (floats widened to fp32), after a check naming every bad key."""
    G = Generator(cfg)
    check_state_dict(G, sd, strict=strict, source=source)
    G.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, strict=strict)
    return G.eval().requires_grad_(False)


def check_state_dict(
    model: torch.nn.Module, sd: dict[str, torch.Tensor], strict: bool = True, source: str = ""
) -> None:
    """Raise CheckpointError naming every missing, unexpected or mis-shaped key."""
    want = model.state_dict()
    where = f" in {source}" if source else ""
    missing = sorted(set(want) - set(sd))
    unexpected = sorted(set(sd) - set(want))
    problems = []
    if strict and missing:
        problems.append(f"missing keys{where}: {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if strict and unexpected:
        problems.append(f"unexpected keys{where}: {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    for k in sorted(set(want) & set(sd)):
        if tuple(want[k].shape) != tuple(sd[k].shape):
            got, need = list(sd[k].shape), list(want[k].shape)
            problems.append(f"shape mismatch for {k}{where}: checkpoint {got} vs model {need}")
    if problems:
        raise CheckpointError("; ".join(problems))
