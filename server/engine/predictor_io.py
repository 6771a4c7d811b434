"""Predictor files: the Latent Predictor and Regularizer of one generator in ONE safetensors file.

Tensors are ``predictor.*`` and ``regularizer.*`` (fp16 by default; loaded back as float32).
The metadata (all JSON strings) holds::

    format      "livedrag.predictor"        version "1"
    predictor   PredictorConfig             regularizer  RegularizerConfig
    generator   {"name", "config_hash", "weights_hash"}: the generator it was trained for
    defaults    recommended PredictOptions fields (e.g. the sub-step it was trained for)
    training    provenance (free-form)

A predictor only makes sense for the generator it was trained on: its features, latent
statistics and learned latent directions are that generator's. Loading it for a generator
with another architecture is refused; for the same architecture with other weights (another
training snapshot, another dataset) it is refused unless ``allow_other_weights=True``.
Loading never executes code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file

from .generator import Generator
from .predictor import LatentPredictor, PredictorConfig
from .regularizer import LatentRegularizer, RegularizerConfig

FORMAT = "livedrag.predictor"
FORMAT_VERSION = "1"
DEFAULT_NAME = "synthfaces_predictor.safetensors"
RETRAIN_PREDICTOR = (
    "train a predictor for this generator with scripts/make_trajectories.py and scripts/train_predictor.py"
)


class PredictorError(ValueError):
    """A predictor file that cannot be used, with a message that says why."""


class PredictorNotFoundError(PredictorError, FileNotFoundError):
    """No predictor file where one was expected."""


class PredictorMismatchError(PredictorError):
    """The predictor was trained for another generator."""


@dataclass(frozen=True)
class GeneratorIdentity:
    """What a predictor was trained on: the generator's name, architecture and weights fingerprints."""

    name: str
    config_hash: str  # sha256 of the architecture fields of GeneratorConfig (not name, not extra)
    weights_hash: str  # sha256 of a strided sample of every tensor of the state dict

    @classmethod
    def of(cls, G: Generator) -> GeneratorIdentity:
        cfg = G.cfg.to_dict()
        cfg.pop("name", None)
        cfg.pop("extra", None)
        config_hash = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]
        h = hashlib.sha256()
        for k, v in sorted(G.state_dict().items()):
            flat = v.detach().float().flatten()
            sample = flat[:: max(1, flat.numel() // 4096)].cpu().contiguous()
            h.update(k.encode())
            h.update(str(tuple(v.shape)).encode())
            h.update(sample.numpy().tobytes())
        return cls(name=G.cfg.name, config_hash=config_hash, weights_hash=h.hexdigest()[:16])

    def to_dict(self) -> dict:
        return asdict(self)

    def check(
        self,
        G: Generator,
        allow_other_weights: bool = False,
        source: str = "",
        retrain: str = RETRAIN_PREDICTOR,
    ) -> None:
        """Raise ``PredictorMismatchError`` unless ``G`` is the generator this identity names;
        ``retrain`` says how to make a network for another architecture."""
        other = GeneratorIdentity.of(G)
        where = f"{source} " if source else "this network "
        if other.config_hash != self.config_hash:
            raise PredictorMismatchError(
                f"{where}was trained for generator {self.name or '(unnamed)'} (architecture "
                f"{self.config_hash}), not for {other.name or '(unnamed)'} (architecture "
                f"{other.config_hash}); {retrain}"
            )
        if other.weights_hash != self.weights_hash and not allow_other_weights:
            raise PredictorMismatchError(
                f"{where}was trained for other weights of this architecture (generator "
                f"{self.name or '(unnamed)'}, weights {self.weights_hash}; this one has "
                f"{other.weights_hash}): retrain it for this generator, or pass "
                "allow_other_weights=True to use it anyway"
            )


@dataclass
class PredictorBundle:
    """A trained predictor and regularizer, the generator they belong to and recommended options."""

    predictor: LatentPredictor
    regularizer: LatentRegularizer
    identity: GeneratorIdentity
    defaults: dict = field(default_factory=dict)  # PredictOptions fields recommended by training
    training: dict = field(default_factory=dict)  # provenance

    def to(self, device: str | torch.device) -> PredictorBundle:
        self.predictor.to(device)
        self.regularizer.to(device)
        return self

    def eval(self) -> PredictorBundle:
        self.predictor.eval().requires_grad_(False)
        self.regularizer.eval().requires_grad_(False)
        return self


def read_network_file(
    path: Path, fmt: str, version: str, what: str, error: type[Exception]
) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a livedrag network file of format ``fmt`` (a predictor, an encoder);
    ``error`` with a message naming ``what`` for anything else."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
    except (SafetensorError, OSError) as e:
        raise error(f"{path} is not a safetensors file ({e})") from e
    if meta.get("format") != fmt:
        raise error(f"{path} is not a livedrag {what} (metadata format={meta.get('format')!r})")
    if meta.get("version") != version:
        raise error(f"{path}: unsupported {what} format version {meta.get('version')!r}")
    return meta, sd


def load_matching(
    module: torch.nn.Module, sd: dict[str, torch.Tensor], source: str, error: type[Exception]
) -> None:
    """Load ``sd`` into ``module`` after checking it has exactly the module's tensors and shapes."""
    want = module.state_dict()
    missing, unexpected = sorted(set(want) - set(sd)), sorted(set(sd) - set(want))
    bad = [k for k in sorted(set(want) & set(sd)) if want[k].shape != sd[k].shape]
    if missing or unexpected or bad:
        raise error(
            f"{source} tensors do not match its config "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]}, mis-shaped {bad[:5]})"
        )
    module.load_state_dict(sd)


def default_predictor_path() -> Path:
    """Where the shipped SynthFaces predictor lives (the file may not exist yet)."""
    return Path(str(resources.files("server") / "assets" / DEFAULT_NAME))


def save_predictor(bundle: PredictorBundle, path: str | Path, half: bool = True) -> Path:
    """Write ``bundle`` to ``path`` atomically; ``half`` stores floating tensors as fp16."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {}
    for prefix, module in (("predictor", bundle.predictor), ("regularizer", bundle.regularizer)):
        for k, v in module.state_dict().items():
            v = v.detach().cpu().contiguous()
            if half and v.is_floating_point() and not k.endswith(("w_avg", "w_std")):
                v = v.half()
            sd[f"{prefix}.{k}"] = v
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "predictor": json.dumps(bundle.predictor.cfg.to_dict()),
        "regularizer": json.dumps(bundle.regularizer.cfg.to_dict()),
        "generator": json.dumps(bundle.identity.to_dict()),
        "defaults": json.dumps(bundle.defaults),
        "training": json.dumps(bundle.training),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(sd, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def load_predictor(
    path: str | Path | None = None,
    G: Generator | None = None,
    device: str | torch.device | None = None,
    allow_other_weights: bool = False,
) -> PredictorBundle:
    """Load a predictor file (None: the shipped SynthFaces predictor) and check it fits ``G``.

    ``device`` defaults to G's device (the CPU without G). Raises ``PredictorNotFoundError``
    when the file is absent, ``PredictorMismatchError`` for another generator, ``PredictorError``
    for anything else wrong with the file.
    """
    shipped = path is None
    path = default_predictor_path() if path is None else Path(path)
    if not path.is_file():
        if shipped:
            raise PredictorNotFoundError(
                f"predictor not available yet: no {path} in this checkout; build it with "
                "scripts/make_trajectories.py and scripts/train_predictor.py (docs/predictor.md), "
                "or use --method optimize"
            )
        raise PredictorNotFoundError(f"predictor file not found: {path}")
    meta, sd = read_network_file(path, FORMAT, FORMAT_VERSION, "predictor", PredictorError)
    try:
        pcfg = PredictorConfig.from_dict(json.loads(meta["predictor"]))
        rcfg = RegularizerConfig.from_dict(json.loads(meta["regularizer"]))
        identity = GeneratorIdentity(**json.loads(meta["generator"]))
        defaults = json.loads(meta.get("defaults", "{}"))
        training = json.loads(meta.get("training", "{}"))
    except (KeyError, ValueError, TypeError) as e:
        raise PredictorError(f"{path}: bad predictor metadata: {e}") from e
    if G is not None:
        identity.check(G, allow_other_weights=allow_other_weights, source=str(path))
        if device is None:
            device = G.mapping.w_avg.device
    predictor, regularizer = LatentPredictor(pcfg), LatentRegularizer(rcfg)
    for prefix, module in (("predictor", predictor), ("regularizer", regularizer)):
        part = {k[len(prefix) + 1 :]: v.float() for k, v in sd.items() if k.startswith(prefix + ".")}
        load_matching(module, part, f"{path}: {prefix}", PredictorError)
    bundle = PredictorBundle(predictor, regularizer, identity, defaults, training).eval()
    return bundle.to(device or "cpu")
