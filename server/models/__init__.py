"""Bring your own models: a library of model folders (generator, optional predictor and encoder,
a card), plus the embedded default. Imports the engine only."""

from .card import MODES, ModelCard, ModelCardError
from .library import DEFAULT_MODEL, CheckResult, ModelEntry, ModelLibrary, ModelLibraryError

__all__ = [
    "DEFAULT_MODEL",
    "MODES",
    "CheckResult",
    "ModelCard",
    "ModelCardError",
    "ModelEntry",
    "ModelLibrary",
    "ModelLibraryError",
]
