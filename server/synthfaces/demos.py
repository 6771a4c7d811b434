"""Named landmark drags on generated faces, for the pictures in the docs (scripts/eval_generator.py,
scripts/demo_predict.py): each moves a few detected landmarks of one seed's face by fixed offsets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .landmarks import LANDMARK_NAMES


@dataclass(frozen=True)
class DemoDrag:
    name: str
    seed: int
    moves: tuple[tuple[str, tuple[float, float]], ...]  # (landmark name, (dx, dy) in px at 64 px)

    @property
    def indices(self) -> list[int]:
        """Indices of the moved landmarks in ``LANDMARK_NAMES``."""
        return [LANDMARK_NAMES.index(n) for n, _ in self.moves]

    def points(self, landmarks: np.ndarray, resolution: int) -> tuple[list[list[float]], list[list[float]]]:
        """(handles, targets) from this face's detected landmarks [30, 2]; offsets scale with the
        resolution and targets are clipped to the image."""
        scale = resolution / 64
        handles = [landmarks[i].astype(float).tolist() for i in self.indices]
        hi = resolution - 1.0
        targets = [
            [min(hi, max(0.0, h[0] + d[0] * scale)), min(hi, max(0.0, h[1] + d[1] * scale))]
            for h, (_, d) in zip(handles, self.moves, strict=True)
        ]
        return handles, targets


DEMO_DRAGS: tuple[DemoDrag, ...] = (
    DemoDrag("smile", 3, (("mouth_left", (-3, -2)), ("mouth_right", (3, -2)))),
    DemoDrag("open_mouth", 5, (("lower_lip_bottom", (0, 4)),)),
    DemoDrag("turn_head", 8, (("nose_tip", (5, 0)),)),
    DemoDrag("raise_brows", 11, (("left_brow_mid", (0, -3)), ("right_brow_mid", (0, -3)))),
)
