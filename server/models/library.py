"""The model library: a folder of model folders, plus the embedded default model.

``ModelLibrary(dir)`` lists entries (the embedded SynthFaces model first, always there and
read-only, then every ``dir/<name>/`` folder by name), loads their cards, checks them and adds new
ones. Checking an entry loads its generator (metadata first, then all tensors) and its predictor
and encoder against it with the engine's fingerprint checks, so a network made for another
generator is refused with the engine's message. Problems come back as one line each, naming the
entry and the file; nothing here runs code stored in a file or reaches the network.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from server.engine.checkpoint import (
    FORMAT as GENERATOR_FORMAT,
)
from server.engine.checkpoint import (
    CheckpointError,
    default_checkpoint_path,
    load_generator,
    read_metadata,
)
from server.engine.convert import convert_file, sniff_format
from server.engine.encoder import EncoderError, default_encoder_path, load_encoder
from server.engine.generator import Generator, GeneratorConfig
from server.engine.predictor_io import PredictorError, default_predictor_path, load_predictor

from .card import FILE_NAMES, MODE_NEEDS, ModelCard, ModelCardError, check_name

DEFAULT_MODEL = "synthfaces"  # the embedded model's name in every library


class ModelLibraryError(ValueError):
    """A library operation that cannot be done (unknown name, existing entry, bad input file)."""


@dataclass(frozen=True)
class ModelEntry:
    """One model of the library: its card (None when unreadable) and where its files are."""

    name: str
    folder: Path | None  # None for the embedded default
    card: ModelCard | None
    card_error: str | None = None
    builtin: bool = False

    def path(self, role: str) -> Path | None:
        """The absolute path of the card's file for ``role`` ('generator', ...), or None."""
        if self.card is None or role not in self.card.files:
            return None
        p = Path(self.card.files[role])
        return p if p.is_absolute() or self.folder is None else self.folder / p


@dataclass
class CheckResult:
    """What ``ModelLibrary.check`` found: errors make an entry unusable; ``modes`` are those that work."""

    name: str
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # modes the embedded model cannot offer, and why
    modes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors


def _one_line(e: BaseException | str) -> str:
    return " ".join(str(e).split())


def _default_entry() -> ModelEntry:
    g = default_checkpoint_path()
    if g is None:
        return ModelEntry(DEFAULT_MODEL, None, None, "no embedded generator in this checkout", True)
    try:
        res = GeneratorConfig.from_dict(json.loads(read_metadata(g)["config"])).img_resolution
    except (CheckpointError, KeyError, ValueError, TypeError) as e:
        return ModelEntry(DEFAULT_MODEL, None, None, _one_line(e), True)
    files = {"generator": str(g)}
    modes = ["optimize"]
    for role, mode, p in (
        ("predictor", "predict", default_predictor_path()),
        ("encoder", "encoder", default_encoder_path()),
    ):
        if p.is_file():
            files[role] = str(p)
            modes.append(mode)
    card = ModelCard(
        name=DEFAULT_MODEL,
        resolution=res,
        licence="MIT",
        source="embedded SynthFaces model (server/assets, docs/model.md)",
        modes=tuple(modes),
        files=files,
    )
    return ModelEntry(DEFAULT_MODEL, None, card, None, True)


class ModelLibrary:
    """Model folders under ``root`` (None: only the embedded default)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = None if root is None else Path(root)

    def names(self) -> list[str]:
        """The embedded default first, then the folders under ``root`` in name order."""
        names = [DEFAULT_MODEL]
        if self.root is not None and self.root.is_dir():
            names += sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        return names

    def entry(self, name: str) -> ModelEntry:
        if name == DEFAULT_MODEL:
            return _default_entry()
        folder = None if self.root is None else self.root / name
        if folder is None or name.startswith(".") or not folder.is_dir():
            known = ", ".join(self.names())
            raise ModelLibraryError(f"no model named {name!r} (known: {known})")
        try:
            card = ModelCard.load(folder)
        except ModelCardError as e:
            return ModelEntry(name, folder, None, _one_line(e))
        return ModelEntry(name, folder, card)

    def entries(self) -> list[ModelEntry]:
        return [self.entry(n) for n in self.names()]

    def check(self, name: str, device: str = "cpu") -> CheckResult:
        """Check one entry: card, generator, predictor and encoder, and the modes the card claims."""
        return check_entry(self.entry(name), device=device)

    def add(
        self,
        src: str | Path,
        name: str | None = None,
        licence: str = "unknown",
        source: str | None = None,
        predictor: str | Path | None = None,
        encoder: str | Path | None = None,
        half: bool = False,
    ) -> ModelEntry:
        """Add ``src`` (a livedrag generator .safetensors, an NVIDIA .pkl or a rosinality .pt) as
        ``root/<name>/`` with its optional predictor and encoder; refuses an existing name and
        networks made for another generator. Writes into a hidden folder, checks it, then renames."""
        if self.root is None:
            raise ModelLibraryError("no library folder given (--models DIR)")
        src = Path(src)
        if not src.is_file():
            raise ModelLibraryError(f"no such file: {src}")
        name = check_name(name if name is not None else src.stem)
        if name == DEFAULT_MODEL:
            raise ModelLibraryError(f"{name!r} is the embedded default model; choose another --name")
        final = self.root / name
        if final.exists():
            raise ModelLibraryError(f"model {name!r} exists ({final}); refusing to overwrite it")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".adding-{name}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            G = _write_generator(src, tmp / FILE_NAMES["generator"], name, half)
            files = {"generator": FILE_NAMES["generator"]}
            modes = ["optimize"]
            for role, mode, p in (("predictor", "predict", predictor), ("encoder", "encoder", encoder)):
                if p is None:
                    continue
                p = Path(p)
                try:
                    _load_network(role, p, G)  # refuses one made for another generator
                except ModelLibraryError as e:
                    raise ModelLibraryError(f"refusing the {role} for model {name!r}: {e}") from None
                shutil.copyfile(p, tmp / FILE_NAMES[role])
                files[role] = FILE_NAMES[role]
                modes.append(mode)
            card = ModelCard(
                name=name,
                resolution=G.cfg.img_resolution,
                licence=licence,
                source=src.name if source is None else source,
                modes=tuple(modes),
                files=files,
            )
            card.save(tmp)
            result = check_folder(name, tmp, card)
            if not result.ok:
                raise ModelLibraryError("; ".join(result.errors))
            if final.exists():  # made by someone else meanwhile
                raise ModelLibraryError(f"model {name!r} exists ({final}); refusing to overwrite it")
            tmp.rename(final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        return self.entry(name)


def _write_generator(src: Path, dst: Path, name: str, half: bool) -> Generator:
    """Copy a livedrag generator after loading it strictly, or convert a foreign one safely."""
    with src.open("rb") as f:
        kind = sniff_format(f.read(32))
    if kind == "safetensors":
        G = load_generator(src)
        shutil.copyfile(src, dst)
        return G
    convert_file(src, dst, half=half, name=name)
    return load_generator(dst)


def _load_network(role: str, path: Path, G: Generator) -> None:
    if not path.is_file():
        raise ModelLibraryError(f"{role} file not found: {path}")
    try:
        if role == "predictor":
            load_predictor(path, G)
        else:
            load_encoder(path, G)
    except (PredictorError, EncoderError) as e:
        raise ModelLibraryError(_one_line(e)) from None


def check_entry(entry: ModelEntry, device: str = "cpu") -> CheckResult:
    result = CheckResult(entry.name)
    if entry.card is None:
        where = entry.folder or "embedded"
        result.errors.append(f"model {entry.name}: {where}: {entry.card_error}")
        return result
    if entry.builtin:
        # the embedded model offers what its shipped files allow; a shipped predictor that is
        # not retrained yet for a new default generator turns predict off, with a note
        found = _check(entry, device)
        result.errors = [e for kind, e in found if kind == "generator"]
        result.notes = [e for kind, e in found if kind != "generator"]
        off = {m for m, role in MODE_NEEDS.items() if any(k == role for k, _ in found)}
        result.modes = tuple(m for m in entry.card.modes if m not in off) if result.ok else ()
        return result
    return check_folder(entry.name, entry.folder, entry.card, device)


def check_folder(name: str, folder: Path, card: ModelCard, device: str = "cpu") -> CheckResult:
    result = CheckResult(name)
    if card.name != name:
        result.errors.append(
            f"model {name}: {folder / 'card.json'}: card names {card.name!r}, the folder {name!r}"
        )
    entry = ModelEntry(name, folder, card)
    result.errors += [e for _, e in _check(entry, device)]
    for mode, role in MODE_NEEDS.items():
        if mode in card.modes and role not in card.files:
            result.errors.append(f"model {name}: card.json claims mode {mode!r} but names no {role} file")
    if result.ok:
        result.modes = card.modes
    return result


def _check(entry: ModelEntry, device: str) -> list[tuple[str, str]]:
    """(role, one-line problem) for each file of ``entry`` that is missing, unreadable, does not
    fit the card or was made for another generator."""
    card = entry.card
    assert card is not None
    g = entry.path("generator")
    assert g is not None

    def problem(role: str, path: Path, e: BaseException | str) -> tuple[str, str]:
        msg = _one_line(e)
        return role, f"model {entry.name}: {msg if str(path) in msg else f'{path}: {msg}'}"

    if not g.is_file():
        return [problem("generator", g, "generator file not found")]
    try:
        meta = read_metadata(g)
        if meta.get("format") != GENERATOR_FORMAT or "config" not in meta:
            raise CheckpointError(f"not a livedrag generator checkpoint (format={meta.get('format')!r})")
        cfg = GeneratorConfig.from_dict(json.loads(meta["config"]))
    except (CheckpointError, ValueError, TypeError) as e:
        return [problem("generator", g, e)]
    if cfg.img_resolution != card.resolution:
        return [
            problem(
                "generator",
                g,
                f"the card says {card.resolution} px, the generator makes {cfg.img_resolution} px",
            )
        ]
    try:
        G = load_generator(g, device=device)
    except (CheckpointError, ValueError, RuntimeError) as e:
        return [problem("generator", g, e)]
    found = []
    for role in ("predictor", "encoder"):
        p = entry.path(role)
        if p is None:
            continue
        try:
            _load_network(role, p, G)
        except ModelLibraryError as e:
            found.append(problem(role, p, e))
    return found
