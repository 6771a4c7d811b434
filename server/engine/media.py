"""Frames to bytes and files: JPEG/PNG encoding, sample grids, point overlays, trajectory GIFs.

Frames are uint8 numpy arrays [H, W, 3] (the engine's ``StepResult.frame``). Encoding uses
Pillow only; JPEG is the streaming format (a 512x512 frame encodes in about a millisecond,
WebP is far slower).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HANDLE_COLOUR = (230, 40, 40)  # red
TARGET_COLOUR = (40, 90, 235)  # blue
ARROW_COLOUR = (255, 255, 255)


def _check_frame(frame: np.ndarray) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        raise ValueError(
            f"frame must be a uint8 numpy array, got {getattr(frame, 'dtype', type(frame).__name__)}"
        )
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.ndim == 3 and frame.shape[-1] == 1:  # grey
        frame = np.repeat(frame, 3, axis=-1)
    if frame.ndim != 3 or frame.shape[-1] not in (3, 4):
        raise ValueError(f"frame must be [H, W, 3], got shape {list(frame.shape)}")
    return np.ascontiguousarray(frame[..., :3])


def encode_jpeg(frame: np.ndarray, quality: int = 85) -> bytes:
    """uint8 [H, W, 3] -> JPEG bytes (4:2:0 chroma, no optimisation pass: fastest)."""
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    buf = io.BytesIO()
    Image.fromarray(_check_frame(frame)).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def encode_png(frame: np.ndarray, compress_level: int = 1) -> bytes:
    """uint8 [H, W, 3] -> PNG bytes (lossless; level 1 is fast, 9 is small)."""
    buf = io.BytesIO()
    Image.fromarray(_check_frame(frame)).save(buf, format="PNG", compress_level=int(compress_level))
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """JPEG/PNG bytes -> uint8 [H, W, 3]."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def make_grid(images: Sequence[np.ndarray], cols: int | None = None, pad: int = 0) -> np.ndarray:
    """Tile equally sized frames row by row; ``cols=None`` makes the grid about square.

    Empty cells (when the count does not fill the last row) and the padding are black.
    """
    if len(images) == 0:
        raise ValueError("make_grid needs at least one image")
    frames = [_check_frame(im) for im in images]
    h, w, _ = frames[0].shape
    if any(f.shape != frames[0].shape for f in frames):
        raise ValueError("make_grid needs images of one size")
    cols = cols or math.ceil(math.sqrt(len(frames)))
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    cols = min(cols, len(frames))
    rows = math.ceil(len(frames) / cols)
    grid = np.zeros((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad, 3), np.uint8)
    for i, f in enumerate(frames):
        r, c = divmod(i, cols)
        grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = f
    return grid


def upscale(frame: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling by an integer factor (keeps small model outputs crisp)."""
    if scale == 1:
        return frame
    if scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale}")
    return np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1)


def draw_points(
    frame: np.ndarray,
    handles: Sequence[Sequence[float]],
    targets: Sequence[Sequence[float]] | None = None,
    scale: int = 1,
    radius: float | None = None,
) -> np.ndarray:
    """A copy of ``frame`` (upscaled ``scale`` times) with red handles, blue targets and arrows.

    Points are (x, y) in the frame's pixels (before scaling); pixel centres are on integers.
    """
    img = Image.fromarray(upscale(_check_frame(frame), scale))
    d = ImageDraw.Draw(img)
    size = max(img.size)
    r = radius if radius is not None else max(2.0, size / 70)
    lw = max(1, round(r / 2))

    def px(p: Sequence[float]) -> tuple[float, float]:
        return ((float(p[0]) + 0.5) * scale - 0.5, (float(p[1]) + 0.5) * scale - 0.5)

    targets = targets or []
    for h, t in zip(handles, targets, strict=False):
        (x0, y0), (x1, y1) = px(h), px(t)
        length = math.hypot(x1 - x0, y1 - y0)
        if length > 2 * r:
            ux, uy = (x1 - x0) / length, (y1 - y0) / length
            ex, ey = x1 - ux * r, y1 - uy * r  # stop at the target's rim
            d.line([(x0, y0), (ex, ey)], fill=ARROW_COLOUR, width=lw)
            head = 2.5 * r
            left = (ex - ux * head - uy * head * 0.5, ey - uy * head + ux * head * 0.5)
            right = (ex - ux * head + uy * head * 0.5, ey - uy * head - ux * head * 0.5)
            d.polygon([(ex, ey), left, right], fill=ARROW_COLOUR)
    for t in targets:
        x, y = px(t)
        d.ellipse([x - r, y - r, x + r, y + r], fill=TARGET_COLOUR, outline=ARROW_COLOUR)
    for h in handles:
        x, y = px(h)
        d.ellipse([x - r, y - r, x + r, y + r], fill=HANDLE_COLOUR, outline=ARROW_COLOUR)
    return np.asarray(img)


def write_gif(
    frames: Sequence[np.ndarray],
    path: str | Path,
    fps: float = 15,
    points: Sequence[tuple[Sequence[Sequence[float]], Sequence[Sequence[float]]]] | None = None,
    scale: int = 1,
) -> Path:
    """Write an endlessly looping GIF; ``points[i] = (handles, targets)`` draws them on frame i."""
    if len(frames) == 0:
        raise ValueError("write_gif needs at least one frame")
    if points is not None and len(points) != len(frames):
        raise ValueError(
            f"points must have one (handles, targets) entry per frame: {len(points)} vs {len(frames)}"
        )
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    out = []
    for i, f in enumerate(frames):
        if points is not None:
            f = draw_points(f, points[i][0], points[i][1], scale=scale)
        else:
            f = upscale(_check_frame(f), scale)
        out.append(Image.fromarray(f))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    duration = max(20, round(1000 / fps))  # browsers clamp shorter GIF delays
    out[0].save(
        path, format="GIF", save_all=True, append_images=out[1:], duration=duration, loop=0, optimize=False
    )
    return path
