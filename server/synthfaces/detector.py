"""SynthFaces landmark detector: a small CNN with heatmaps and soft-argmax (integral regression).

It plays the role dlib plays for FFHQ in DragGAN's evaluation: landmarks on rendered or generated
SynthFaces. Trained by scripts/train_landmarks.py on the renderer's exact labels; the shipped
weights are server/assets/landmarks.safetensors (fp16, config as JSON metadata).

Images of any size are resized (antialiased bilinear) to ``cfg.input_size``; landmarks come back
in the input image's pixel coordinates with the renderer's convention (pixel (i, j) covers
[i, i+1) x [j, j+1)), so for a renderer image ``detect(img)`` is directly comparable with the
renderer's landmarks.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .landmarks import LANDMARK_NAMES, NUM_LANDMARKS

FORMAT = "livedrag.landmarks"
FORMAT_VERSION = "1"


@dataclass(frozen=True)
class DetectorConfig:
    input_size: int = 64  # images are resized to input_size x input_size before the network
    num_landmarks: int = NUM_LANDMARKS  # heatmap channels, in LANDMARK_NAMES order
    c1: int = 24  # channels at 1/2 resolution (where the heatmaps are)
    c2: int = 48  # channels at 1/4 resolution
    feat_dim: int = 96  # channels at 1/8 resolution; features() pools these

    def to_dict(self) -> dict:
        return asdict(self)


def _conv(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class _Res(nn.Module):
    """Two 3x3 convs with an identity shortcut."""

    def __init__(self, c: int):
        super().__init__()
        self.a = _conv(c, c)
        self.b = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.b(self.a(x)))


class LandmarkDetector(nn.Module):
    """U-shaped CNN: 1/2 -> 1/4 -> 1/8 encoder, decoder back to 1/2, one heatmap per landmark.

    About 90 MFLOP per 64 px image and 0.3 M parameters with the default config.
    """

    def __init__(self, cfg: DetectorConfig = DetectorConfig()):
        super().__init__()
        self.cfg = cfg
        c1, c2, c3 = cfg.c1, cfg.c2, cfg.feat_dim
        self.enc1 = nn.Sequential(_conv(3, 16, 2), _conv(16, c1))  # [N, c1, S/2, S/2]
        self.enc2 = nn.Sequential(_conv(c1, c2, 2), _Res(c2))  # [N, c2, S/4, S/4]
        self.enc3 = nn.Sequential(_conv(c2, c3, 2), _Res(c3))  # [N, c3, S/8, S/8]
        self.dec2 = nn.Sequential(_conv(c3 + c2, c2, k=1), _conv(c2, c2))  # [N, c2, S/4, S/4]
        self.dec1 = nn.Sequential(_conv(c2 + c1, c1, k=1), _conv(c1, c1))  # [N, c1, S/2, S/2]
        self.head = nn.Conv2d(c1, cfg.num_landmarks, 1)  # heatmap logits
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), persistent=False)

    def _trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = (x - self.mean) * 2.0
        f1 = self.enc1(x)
        f2 = self.enc2(f1)
        f3 = self.enc3(f2)
        return f1, f2, f3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] float in [0, 1] -> landmarks [N, K, 2] in input pixels (x, y)."""
        f1, f2, f3 = self._trunk(x)
        d2 = self.dec2(torch.cat([F.interpolate(f3, scale_factor=2.0, mode="nearest"), f2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2.0, mode="nearest"), f1], 1))
        logits = self.head(d1)  # [N, K, S/2, S/2]
        return soft_argmax(logits, stride=2.0)

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] -> [N, feat_dim]: global average of the bottleneck (after ReLU)."""
        return self._trunk(x)[2].mean(dim=(2, 3))


def soft_argmax(logits: torch.Tensor, stride: float) -> torch.Tensor:
    """[N, K, h, w] logits -> [N, K, 2] expected (x, y) of the softmax, in input pixels."""
    n, k, h, w = logits.shape
    p = torch.softmax(logits.reshape(n, k, h * w).float(), dim=-1).reshape(n, k, h, w)
    xs = (torch.arange(w, device=logits.device, dtype=p.dtype) + 0.5) * stride
    ys = (torch.arange(h, device=logits.device, dtype=p.dtype) + 0.5) * stride
    x = (p.sum(2) * xs).sum(-1)
    y = (p.sum(3) * ys).sum(-1)
    return torch.stack([x, y], dim=-1)


# ---------------------------------------------------------------- public helpers


def _as_batch(images) -> torch.Tensor:
    """Check and batch: uint8 [N, H, W, 3] or float [N, 3, H, W] in [0, 1] (N optional)."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not torch.is_tensor(images):
        raise TypeError(f"expected a numpy array or torch tensor, got {type(images).__name__}")
    if images.ndim == 3:
        images = images[None]
    if images.dtype == torch.uint8:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"uint8 images must be [N, H, W, 3], got {tuple(images.shape)}")
    else:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"float images must be [N, 3, H, W] in [0, 1], got {tuple(images.shape)}")
        if images.numel() and float(images.min()) < -0.1:
            raise ValueError(
                "float images must be in [0, 1] (generator output in [-1, 1]: use (img + 1) / 2)"
            )
    return images


def _prepare(chunk: torch.Tensor, size: int, device: torch.device) -> tuple[torch.Tensor, float, float]:
    """A checked batch -> float [n, 3, size, size] on ``device``, plus the x and y scale back."""
    if chunk.dtype == torch.uint8:
        x = chunk.to(device).permute(0, 3, 1, 2).float() / 255.0
    else:
        x = chunk.to(device=device, dtype=torch.float32)
    h, w = x.shape[2], x.shape[3]
    if (h, w) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x, w / size, h / size


class Detector:
    """A loaded detector: ``detect`` and ``features`` take images of any size."""

    def __init__(
        self,
        model: LandmarkDetector,
        device: torch.device | str = "cpu",
        feature_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.cfg = model.cfg
        # per-dimension mean and std of features() on rendered faces: features come back z-scored
        self.feature_stats = feature_stats

    @torch.no_grad()
    def detect(self, images, batch_size: int = 256) -> np.ndarray:
        """Images (uint8 [N, H, W, 3] or float [N, 3, H, W] in [0, 1]) -> float32 [N, K, 2] pixels."""
        images = _as_batch(images)
        out = []
        for i in range(0, len(images), batch_size):
            x, sx, sy = _prepare(images[i : i + batch_size], self.cfg.input_size, self.device)
            lm = self.model(x) * torch.tensor([sx, sy], device=self.device)
            out.append(lm.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    @torch.no_grad()
    def features(self, images, batch_size: int = 256) -> np.ndarray:
        """Images -> float64 [N, D] pooled bottleneck features (for fid.py).

        With the shipped weights they are z-scored with statistics of 2000 rendered faces, so a
        Frechet distance on them is in units of rendered-face feature standard deviations.
        """
        images = _as_batch(images)
        out = []
        for i in range(0, len(images), batch_size):
            x, _, _ = _prepare(images[i : i + batch_size], self.cfg.input_size, self.device)
            out.append(self.model.pooled_features(x).double().cpu())
        f = torch.cat(out)
        if self.feature_stats is not None:
            mean, std = self.feature_stats
            f = (f - mean.double()) / std.double()
        return f.numpy()


def default_detector_path() -> Path:
    return Path(str(resources.files("server") / "assets" / "landmarks.safetensors"))


def save_detector(
    model: LandmarkDetector,
    path: str | Path,
    extra_meta: dict | None = None,
    feature_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Path:
    """Write fp16 weights (BatchNorm statistics included) with the config as JSON metadata.

    ``feature_stats`` (mean, std) of the pooled features are stored in fp32 as
    ``feature_mean`` / ``feature_std``; ``Detector.features`` then z-scores with them.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        sd[k] = v.half() if v.is_floating_point() else v
    if feature_stats is not None:
        sd["feature_mean"], sd["feature_std"] = (t.detach().float().cpu().contiguous() for t in feature_stats)
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": json.dumps(model.cfg.to_dict()),
        "landmark_names": json.dumps(list(LANDMARK_NAMES)),
    }
    for k, v in (extra_meta or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(sd, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def load_detector(path: str | Path | None = None, device: str | torch.device = "cpu") -> Detector:
    """Load a detector (``None``: the shipped server/assets/landmarks.safetensors)."""
    from safetensors import safe_open

    path = Path(path) if path is not None else default_detector_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"landmark detector not found: {path} (train it with scripts/train_landmarks.py)"
        )
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a landmark detector (format {meta.get('format')!r})")
    names = json.loads(meta.get("landmark_names", "[]"))
    if names and tuple(names) != LANDMARK_NAMES:
        raise ValueError(f"{path} was trained for different landmarks than this renderer's LANDMARK_NAMES")
    cfg = DetectorConfig(**json.loads(meta["config"]))
    model = LandmarkDetector(cfg)
    stats = None
    if "feature_mean" in sd:
        stats = (sd.pop("feature_mean"), sd.pop("feature_std"))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    return Detector(model, device, stats)


_DEFAULT: dict[str, Detector] = {}


def _default(device: str | torch.device = "cpu") -> Detector:
    key = str(torch.device(device))
    if key not in _DEFAULT:
        _DEFAULT[key] = load_detector(None, device)
    return _DEFAULT[key]


def detect(images, detector: Detector | None = None) -> np.ndarray:
    """Landmarks float32 [N, K, 2] in the images' pixels (default: the shipped detector on the CPU)."""
    return (detector or _default()).detect(images)


def features(images, detector: Detector | None = None) -> np.ndarray:
    """Pooled detector features [N, D] (default: the shipped detector on the CPU)."""
    return (detector or _default()).features(images)
