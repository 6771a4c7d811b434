"""The worker's media: frames as uint8 arrays, and each room's trajectory (the frames of its last
drag or projection) with its looping GIF."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from server.engine.generator import to_uint8
from server.engine.media import decode_image, draw_points
from server.engine.session import Point


@dataclass
class TrajectoryItem:
    jpeg: bytes
    handles: list[Point]
    targets: list[Point]


@dataclass
class Trajectory:
    """Frames of one drag for trajectory.gif: at most ``cap`` items; past that every other item is
    dropped and only every ``stride``-th frame is kept, so the GIF spans the whole drag."""

    cap: int
    drag: int = -1
    items: list[TrajectoryItem] = field(default_factory=list)
    last: TrajectoryItem | None = None
    stride: int = 1
    seen: int = 0

    def reset(self, drag: int) -> None:
        self.drag, self.items, self.last, self.stride, self.seen = drag, [], None, 1, 0

    def add(self, item: TrajectoryItem) -> None:
        self.last = item
        if self.seen % self.stride == 0:
            self.items.append(item)
            if len(self.items) > self.cap:
                self.items = self.items[::2]
                self.stride *= 2
        self.seen += 1

    def frames(self) -> list[TrajectoryItem]:
        out = list(self.items)
        if self.last is not None and (not out or out[-1] is not self.last):
            out.append(self.last)
        return out


def _frames(img: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> uint8 [N, H, W, 3]."""
    a = to_uint8(img)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return a[..., :3]


def trajectory_gif(items: Sequence[TrajectoryItem], fps: float = 15.0, size: int = 256) -> bytes:
    """An endlessly looping GIF of a drag's frames with its handles (red) and targets (blue)."""
    from PIL import Image

    if not items:
        raise ValueError("no frames")
    scale = max(1, size // max(decode_image(items[0].jpeg).shape[:2]))
    frames = [
        Image.fromarray(draw_points(decode_image(item.jpeg), item.handles, item.targets, scale=scale))
        for item in items
    ]
    buf = io.BytesIO()
    frames[0].save(
        buf,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=max(20, round(1000 / fps)),
        loop=0,
    )
    return buf.getvalue()
