"""The model library: cards, the embedded default, adding (with safe conversion) and checking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.models import DEFAULT_MODEL, ModelCard, ModelCardError, ModelLibrary, ModelLibraryError
from tests.models.helpers import (
    write_encoder,
    write_generator,
    write_nvidia_pickle,
    write_predictor,
    write_rosinality,
)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A generator with its own predictor and encoder, and a second generator (other weights)."""
    g, G = write_generator(tmp_path / "g.safetensors", seed=0)
    other, _ = write_generator(tmp_path / "other.safetensors", seed=1)
    return {
        "g": g,
        "other": other,
        "predictor": write_predictor(tmp_path / "p.safetensors", G),
        "encoder": write_encoder(tmp_path / "e.safetensors", G),
        "pickle": write_nvidia_pickle(tmp_path / "nv.pkl", G, tmp_path / "MARKER"),
        "rosinality": write_rosinality(tmp_path / "ros.pt"),
    }


def test_card_round_trip_and_refusals(tmp_path: Path) -> None:
    """A card saves and loads unchanged; bad names, modes and fields are refused by name."""
    card = ModelCard("m1", 16, "MIT", "here", ("optimize", "predict"), {"generator": "g", "predictor": "p"})
    card.save(tmp_path)
    assert ModelCard.load(tmp_path) == card
    with pytest.raises(ModelCardError, match="bad model name"):
        ModelCard("../x", 16)
    with pytest.raises(ModelCardError, match="unknown modes"):
        ModelCard("m", 16, modes=("fly",))
    (tmp_path / "card.json").write_text(json.dumps({**card.to_dict(), "extra": 1}))
    with pytest.raises(ModelCardError, match="unknown card fields"):
        ModelCard.load(tmp_path)
    (tmp_path / "card.json").write_text("{")
    with pytest.raises(ModelCardError, match="card.json"):
        ModelCard.load(tmp_path)


def test_default_is_always_listed_and_read_only(tmp_path: Path, files) -> None:
    """The embedded model is listed first with or without a folder, and cannot be replaced."""
    assert ModelLibrary(None).names() == [DEFAULT_MODEL]
    assert ModelLibrary(tmp_path / "absent").names() == [DEFAULT_MODEL]
    entry = ModelLibrary(None).entry(DEFAULT_MODEL)
    assert entry.builtin and entry.card is not None and "optimize" in entry.card.modes
    lib = ModelLibrary(tmp_path / "lib")
    with pytest.raises(ModelLibraryError, match="embedded default"):
        lib.add(files["g"], name=DEFAULT_MODEL)


def test_add_livedrag_generator_with_its_predictor_and_encoder(tmp_path: Path, files) -> None:
    """A native generator is copied with its networks; the card names all three modes and checks."""
    lib = ModelLibrary(tmp_path / "lib")
    entry = lib.add(
        files["g"],
        name="mine",
        licence="CC0",
        source="me",
        predictor=files["predictor"],
        encoder=files["encoder"],
    )
    assert entry.card.modes == ("optimize", "predict", "encoder")
    assert entry.card.resolution == 16 and entry.card.licence == "CC0"
    assert sorted(p.name for p in (tmp_path / "lib" / "mine").iterdir()) == [
        "card.json",
        "encoder.safetensors",
        "generator.safetensors",
        "predictor.safetensors",
    ]
    assert lib.names() == [DEFAULT_MODEL, "mine"]
    result = lib.check("mine")
    assert result.ok and result.modes == ("optimize", "predict", "encoder")


@pytest.mark.parametrize("kind", ["pickle", "rosinality"])
def test_add_converts_foreign_checkpoints(tmp_path: Path, files, kind) -> None:
    """NVIDIA pickles and rosinality files go through the safe converters (no stored code runs)."""
    lib = ModelLibrary(tmp_path / "lib")
    entry = lib.add(files[kind], name=kind)
    assert entry.card.source == files[kind].name and entry.card.modes == ("optimize",)
    assert lib.check(kind).ok
    assert not (tmp_path / "MARKER").exists()


@pytest.mark.parametrize("role", ["predictor", "encoder"])
def test_a_network_of_another_generator_is_refused(tmp_path: Path, files, role) -> None:
    """Adding another generator's predictor or encoder fails clearly and leaves nothing behind."""
    lib = ModelLibrary(tmp_path / "lib")
    with pytest.raises(ModelLibraryError, match=f"refusing the {role} for model 'x'.*other weights"):
        lib.add(files["other"], name="x", **{role: files[role]})
    assert list((tmp_path / "lib").iterdir()) == []


def test_add_refuses_to_overwrite(tmp_path: Path, files) -> None:
    """An existing name is never overwritten."""
    lib = ModelLibrary(tmp_path / "lib")
    lib.add(files["g"], name="m")
    before = (tmp_path / "lib" / "m" / "card.json").read_text()
    with pytest.raises(ModelLibraryError, match="exists.*refusing to overwrite"):
        lib.add(files["other"], name="m")
    assert (tmp_path / "lib" / "m" / "card.json").read_text() == before


def test_check_finds_broken_entries(tmp_path: Path, files) -> None:
    """Swapped networks, a wrong resolution, unbacked modes and missing cards are named per entry and file."""
    lib = ModelLibrary(tmp_path / "lib")
    lib.add(files["g"], name="m", predictor=files["predictor"], encoder=files["encoder"])
    folder = tmp_path / "lib" / "m"
    (folder / "generator.safetensors").write_bytes(files["other"].read_bytes())
    errors = lib.check("m").errors
    assert len(errors) == 2
    assert all(e.startswith("model m: ") for e in errors)
    assert "predictor.safetensors" in errors[0] and "other weights" in errors[0]
    assert "encoder.safetensors" in errors[1]

    card = ModelCard.load(folder)
    ModelCard("m", 32, modes=("optimize",), files={"generator": "generator.safetensors"}).save(folder)
    (err,) = lib.check("m").errors
    assert "generator.safetensors" in err and "card says 32 px" in err and "16 px" in err

    ModelCard("m", 16, modes=("optimize", "predict"), files={"generator": "generator.safetensors"}).save(
        folder
    )
    (err,) = lib.check("m").errors
    assert "claims mode 'predict'" in err and "no predictor file" in err
    assert card.name == "m"

    (tmp_path / "lib" / "nocard").mkdir()
    (err,) = lib.check("nocard").errors
    assert err.startswith("model nocard:") and "card.json" in err
    with pytest.raises(ModelLibraryError, match="no model named 'zzz'"):
        lib.check("zzz")
