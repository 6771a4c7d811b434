"""Image -> W+ encoder: projects a picture into a generator's latent space in one forward pass.

StyleMapGAN's point (Kim et al., CVPR 2021) is that an encoder makes projection real time; here a
small CNN predicts W+ as offsets from the generator's ``w_avg`` in units of the per-dimension
standard deviation of W, and ``server.engine.project`` refines the estimate by optimisation.

Network (defaults, 64 px): a residual CNN 32 -> 16 -> 8 -> 4 with BatchNorm; the 8x8 and
4x4 stages are average-pooled and the 4x4 stage is also flattened through a 1x1 reduction (so
position survives), then one linear layer makes a feature vector. A head shared by all W+ rows
turns ``feature + row embedding`` into that row's offset (a per-row gain and bias on the output),
so rows can differ (style mixing) at the cost of one small MLP. About 1.6 M parameters (3.2 MB
in fp16) and about 80 MFLOP-MACs per 64 px image.

Encoder files (``server/assets/synthfaces_encoder.safetensors`` for the shipped SynthFaces model)
are tied to their generator as predictor files are (``server.engine.predictor_io``): the
metadata names the generator's architecture and weights hashes, and loading for another
generator raises ``EncoderError``. Tensors are fp16 except ``w_avg``/``w_std`` (fp32); the
metadata (JSON strings) holds ``format`` "livedrag.encoder", ``version`` "1", ``config``,
``generator`` and ``training``. Loading never executes code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file
from torch import nn

from .generator import Generator
from .predictor_io import GeneratorIdentity, PredictorMismatchError, load_matching, read_network_file

FORMAT = "livedrag.encoder"
FORMAT_VERSION = "1"
DEFAULT_NAME = "synthfaces_encoder.safetensors"


class EncoderError(RuntimeError):
    """An encoder file that cannot be used (missing, damaged, or made for another generator)."""


@dataclass(frozen=True)
class EncoderConfig:
    img_resolution: int = 64  # input size; other sizes are resized to it
    num_ws: int = 10  # W+ rows of the generator
    w_dim: int = 256  # latent size of the generator
    channels: tuple[int, ...] = (32, 64, 128, 160)  # per stage; stage i works at res / 2**(i + 1)
    feat_dim: int = 384  # image feature vector
    row_dim: int = 384  # hidden size of the shared per-row head

    def __post_init__(self) -> None:
        res = self.img_resolution
        if res < 16 or res & (res - 1):
            raise ValueError(f"img_resolution must be a power of two >= 16, got {res}")
        if len(self.channels) < 2 or res >> len(self.channels) < 2:
            raise ValueError(f"{len(self.channels)} stages do not fit a {res} px input")
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EncoderConfig:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown EncoderConfig fields: {unknown}")
        d = dict(d)
        if "channels" in d:
            d["channels"] = tuple(d["channels"])
        return cls(**d)

    @classmethod
    def for_generator(cls, G: Generator, **kw) -> EncoderConfig:
        return cls(img_resolution=G.img_resolution, num_ws=G.num_ws, w_dim=G.w_dim, **kw)


def _conv(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True)
    )


class _Res(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = _conv(c, c)
        self.b = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.b(self.a(x)), 0.2)


class Encoder(nn.Module):
    """``forward(img float [N, 3, H, W] in [-1, 1]) -> W+ [N, num_ws, w_dim]``."""

    def __init__(self, cfg: EncoderConfig = EncoderConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        stages: list[nn.Module] = [nn.Sequential(_conv(3, ch[0], stride=2), _Res(ch[0]))]
        for cin, cout in zip(ch[:-1], ch[1:], strict=True):
            stages.append(nn.Sequential(_conv(cin, cout, stride=2), _Res(cout)))
        self.stages = nn.ModuleList(stages)
        last_res = cfg.img_resolution >> len(ch)
        self.reduce = _conv(ch[-1], 32, k=1)  # flattened: keeps where things are
        flat = 32 * last_res * last_res
        self.fc = nn.Sequential(nn.Linear(flat + ch[-1] + ch[-2], cfg.feat_dim), nn.LeakyReLU(0.2, True))
        self.row_embed = nn.Parameter(torch.randn(cfg.num_ws, cfg.row_dim) * 0.1)
        self.head_in = nn.Linear(cfg.feat_dim, cfg.row_dim)
        self.head_out = nn.Linear(cfg.row_dim, cfg.w_dim)
        self.row_gain = nn.Parameter(torch.ones(cfg.num_ws, cfg.w_dim))
        self.row_bias = nn.Parameter(torch.zeros(cfg.num_ws, cfg.w_dim))
        nn.init.zeros_(self.head_out.weight)  # starts at w_avg
        nn.init.zeros_(self.head_out.bias)
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))
        self.register_buffer("w_std", torch.ones(cfg.w_dim))

    def set_latent_stats(self, w_avg: torch.Tensor, w_std: torch.Tensor) -> None:
        """The generator's W mean and per-dimension std: the encoder predicts offsets in these units."""
        self.w_avg.copy_(w_avg.detach().reshape(-1))
        self.w_std.copy_(w_std.detach().reshape(-1).clamp_min(1e-6))

    def offsets(self, img: torch.Tensor) -> torch.Tensor:
        """Normalised W+ offsets ``(w - w_avg) / w_std`` [N, num_ws, w_dim]."""
        if img.ndim != 4 or img.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W] in [-1, 1], got {list(img.shape)}")
        res = self.cfg.img_resolution
        x = img.float()
        if x.shape[-2:] != (res, res):
            x = F.interpolate(x, size=(res, res), mode="bilinear", align_corners=False, antialias=True)
        pooled = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= len(self.stages) - 2:
                pooled.append(x.mean(dim=(2, 3)))
        feat = self.fc(torch.cat([self.reduce(x).flatten(1), *pooled], 1))  # [N, feat_dim]
        h = F.leaky_relu(self.head_in(feat)[:, None, :] + self.row_embed[None], 0.2)  # [N, rows, row_dim]
        return self.head_out(h) * self.row_gain + self.row_bias

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.w_avg + self.w_std * self.offsets(img)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def images_to_tensor(images, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 [N, H, W, 3] (or [H, W, 3]) numpy/tensor -> float [N, 3, H, W] in [-1, 1]."""
    if isinstance(images, np.ndarray):
        ok = images.flags.writeable and images.flags.c_contiguous
        images = torch.from_numpy(images if ok else np.array(images, order="C"))
    if not torch.is_tensor(images):
        raise TypeError(f"expected a numpy array or tensor, got {type(images).__name__}")
    if images.ndim == 3:
        images = images[None]
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {list(images.shape)}")
    return images.to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@torch.no_grad()
def encode(encoder: Encoder, images) -> torch.Tensor:
    """uint8 images [N, H, W, 3] -> W+ [N, num_ws, w_dim] float32 on the encoder's device (no grad)."""
    dev = encoder.w_avg.device
    was_training = encoder.training
    encoder.eval()
    try:
        return encoder(images_to_tensor(images, dev)).float()
    finally:
        encoder.train(was_training)


def default_encoder_path() -> Path:
    """Where the shipped SynthFaces encoder lives."""
    return Path(str(resources.files("server") / "assets" / DEFAULT_NAME))


def save_encoder(path: str | Path, encoder: Encoder, G: Generator, training: dict | None = None) -> Path:
    """Write ``encoder`` (fp16; w_avg/w_std fp32) tied to ``G`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {}
    for k, v in encoder.state_dict().items():
        v = v.detach().cpu().contiguous()
        if v.is_floating_point() and k not in ("w_avg", "w_std"):
            v = v.half()
        sd[k] = v
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": json.dumps(encoder.cfg.to_dict()),
        "generator": json.dumps(GeneratorIdentity.of(G).to_dict()),
        "training": json.dumps(training or {}),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(sd, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def read_encoder_metadata(path: str | Path) -> dict:
    """The decoded metadata of an encoder file (config, generator identity, training)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except (SafetensorError, OSError) as e:
        raise EncoderError(f"{path} is not a safetensors file ({e})") from e
    out: dict = {}
    for k, v in meta.items():
        try:
            out[k] = json.loads(v) if k in ("config", "generator", "training") else v
        except ValueError as e:
            raise EncoderError(f"{path}: bad encoder metadata {k!r}: {e}") from e
    return out


def load_encoder(
    path: str | Path | None = None,
    G: Generator | None = None,
    device: str | torch.device | None = None,
    allow_other_weights: bool = False,
) -> Encoder:
    """Load an encoder file (None: the shipped one) and check it was trained for ``G``.

    Raises ``EncoderError`` when the file is missing or unreadable, or was made for another
    generator (another architecture always; other weights of the same architecture unless
    ``allow_other_weights``). ``device`` defaults to G's device (the CPU without G).
    """
    shipped = path is None
    path = default_encoder_path() if path is None else Path(path)
    if not path.is_file():
        if shipped:
            raise EncoderError(
                f"encoder not available: no {path} in this checkout; train one with scripts/train_encoder.py "
                "(docs/real-images.md) or project by optimisation alone"
            )
        raise EncoderError(f"encoder file not found: {path}")
    meta, sd = read_network_file(path, FORMAT, FORMAT_VERSION, "encoder", EncoderError)
    try:
        cfg = EncoderConfig.from_dict(json.loads(meta["config"]))
        identity = GeneratorIdentity(**json.loads(meta["generator"]))
    except (KeyError, ValueError, TypeError) as e:
        raise EncoderError(f"{path}: bad encoder metadata: {e}") from e
    if G is not None:
        try:
            retrain = "train an encoder for it with scripts/train_encoder.py"
            identity.check(G, allow_other_weights=allow_other_weights, source=str(path), retrain=retrain)
        except PredictorMismatchError as e:
            raise EncoderError(f"encoder mismatch: {e}") from None
        if (cfg.num_ws, cfg.w_dim) != (G.num_ws, G.w_dim):
            raise EncoderError(
                f"{path}: encoder predicts [{cfg.num_ws}, {cfg.w_dim}] latents, generator needs "
                f"[{G.num_ws}, {G.w_dim}]"
            )
        if device is None:
            device = G.mapping.w_avg.device
    enc = Encoder(cfg)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    load_matching(enc, sd, str(path), EncoderError)
    return enc.eval().requires_grad_(False).to(device or "cpu")
