"""Model cards: a small JSON description of one model folder in the library.

A model folder ``DIR/<name>/`` holds ``card.json`` and the files it names (paths relative to the
folder): ``generator.safetensors`` always, ``predictor.safetensors`` and ``encoder.safetensors``
when the model offers those modes. ``card.json``::

    {"format": "livedrag.model", "version": "1", "name": "ffhq512", "resolution": 512,
     "licence": "CC BY-NC 4.0", "source": "stylegan2-ffhq-512x512.pkl (NVIDIA)",
     "modes": ["optimize", "predict"],
     "files": {"generator": "generator.safetensors", "predictor": "predictor.safetensors"}}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

CARD_FORMAT = "livedrag.model"
CARD_VERSION = "1"
CARD_FILE = "card.json"

# What each mode needs besides the generator: optimize (DragGAN's optimiser) needs nothing more,
# predict needs a predictor file trained for the generator, encoder (one-pass projection of an
# uploaded photo) needs an encoder file trained for it.
MODES = ("optimize", "predict", "encoder")
ROLES = ("generator", "predictor", "encoder")
FILE_NAMES = {role: f"{role}.safetensors" for role in ROLES}
MODE_NEEDS = {"predict": "predictor", "encoder": "encoder"}

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ModelCardError(ValueError):
    """A card that cannot be read or does not describe a usable entry."""


def check_name(name: str) -> str:
    """``name`` if it can be a folder name in the library, else ``ModelCardError`` saying why."""
    if not _NAME.fullmatch(name or ""):
        raise ModelCardError(
            f"bad model name {name!r}: use 1 to 64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return name


@dataclass(frozen=True)
class ModelCard:
    """What a model is and what it offers; ``files`` maps role -> path relative to its folder."""

    name: str  # the folder name; how clients and the command line pick the model
    resolution: int  # image side in pixels; must equal the generator's img_resolution
    licence: str = "unknown"  # the weights' licence, as the user states it
    source: str = ""  # where the weights came from (file name, sha256, address)
    modes: tuple[str, ...] = ("optimize",)  # subset of MODES the model offers
    files: dict[str, str] = field(default_factory=lambda: {"generator": FILE_NAMES["generator"]})

    def __post_init__(self) -> None:
        check_name(self.name)
        if not isinstance(self.resolution, int) or self.resolution < 4:
            raise ModelCardError(f"bad resolution {self.resolution!r}")
        unknown = [m for m in self.modes if m not in MODES]
        if unknown:
            raise ModelCardError(f"unknown modes {unknown} (known: {', '.join(MODES)})")
        if "generator" not in self.files:
            raise ModelCardError("no generator file named under 'files'")
        bad = [r for r in self.files if r not in ROLES]
        if bad:
            raise ModelCardError(f"unknown file roles {bad} (known: {', '.join(ROLES)})")

    def to_dict(self) -> dict:
        return {
            "format": CARD_FORMAT,
            "version": CARD_VERSION,
            "name": self.name,
            "resolution": self.resolution,
            "licence": self.licence,
            "source": self.source,
            "modes": list(self.modes),
            "files": dict(self.files),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ModelCard:
        if not isinstance(d, dict):
            raise ModelCardError("not a JSON object")
        if d.get("format") != CARD_FORMAT:
            raise ModelCardError(f"format is {d.get('format')!r}, expected {CARD_FORMAT!r}")
        if d.get("version") != CARD_VERSION:
            raise ModelCardError(f"unsupported card version {d.get('version')!r}")
        fields = {"name", "resolution", "licence", "source", "modes", "files"}
        unknown = sorted(set(d) - fields - {"format", "version"})
        if unknown:
            raise ModelCardError(f"unknown card fields {unknown}")
        missing = sorted({"name", "resolution"} - set(d))
        if missing:
            raise ModelCardError(f"missing card fields {missing}")
        files = d.get("files", {"generator": FILE_NAMES["generator"]})
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise ModelCardError("'files' must map roles to file names")
        modes = d.get("modes", ["optimize"])
        if not isinstance(modes, list) or not all(isinstance(m, str) for m in modes):
            raise ModelCardError("'modes' must be a list of names")
        return cls(
            name=str(d["name"]),
            resolution=d["resolution"],
            licence=str(d.get("licence", "unknown")),
            source=str(d.get("source", "")),
            modes=tuple(modes),
            files=dict(files),
        )

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / CARD_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> ModelCard:
        path = Path(folder) / CARD_FILE
        if not path.is_file():
            raise ModelCardError(f"{path}: no card (card.json)")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError) as e:  # JSONDecodeError and ModelCardError are ValueErrors
            raise ModelCardError(f"{path}: {e}") from None
