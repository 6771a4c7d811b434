"""The room's mask: a coarse grid of cells (none / flexible / fixed) painted with brush strokes.

A grid of at most 64 x 64 cells, one byte per cell, keeps the mask compact on the wire (at most
4 KiB) and cheap to validate. Strokes are rasterised on the server (authoritative); the engine
asks :meth:`MaskGrid.fixed_region` for a full-resolution boolean array. See shared/protocol.md,
section 4, for the exact rules. numpy only, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from server.core.protocol_types import LIMITS, MASK_CELL

NONE, FLEXIBLE, FIXED = MASK_CELL["none"], MASK_CELL["flexible"], MASK_CELL["fixed"]
PAINT_VALUE = {"flexible": FLEXIBLE, "fixed": FIXED, "erase": NONE}
MAX_CELLS = int(LIMITS["mask_max_cells"])


@dataclass(frozen=True)
class MaskGrid:
    """``w`` x ``h`` cells over an image of ``image_w`` x ``image_h`` pixels; ``cells`` row-major bytes."""

    image_w: int
    image_h: int
    w: int
    h: int
    cells: bytes

    def __post_init__(self) -> None:
        if len(self.cells) != self.w * self.h:
            raise ValueError(f"mask cells: {len(self.cells)} bytes for a {self.w}x{self.h} grid")
        if self.cells.translate(None, bytes((NONE, FLEXIBLE, FIXED))):
            raise ValueError("mask cells: values must be 0, 1 or 2")

    def __repr__(self) -> str:
        painted = sum(1 for c in self.cells if c)
        return f"MaskGrid({self.w}x{self.h} over {self.image_w}x{self.image_h}, {painted} painted)"

    @classmethod
    def empty(cls, image_w: int, image_h: int) -> MaskGrid:
        w, h = min(image_w, MAX_CELLS), min(image_h, MAX_CELLS)
        return cls(image_w, image_h, w, h, bytes(w * h))

    @property
    def is_empty(self) -> bool:
        return not any(self.cells)

    def array(self) -> np.ndarray:
        """The cells as a [h, w] uint8 array (a copy)."""
        return np.frombuffer(self.cells, dtype=np.uint8).reshape(self.h, self.w).copy()

    def to_wire(self) -> dict:
        return {"w": self.w, "h": self.h, "cells": self.cells}

    def cleared(self) -> MaskGrid:
        return MaskGrid.empty(self.image_w, self.image_h)

    def painted(self, mode: str, radius: float, points: Sequence[tuple[float, float]]) -> MaskGrid:
        """A copy with one stroke painted: cells whose centre is within ``radius`` image pixels of
        the polyline through ``points`` get the mode's value (flexible, fixed, or none for erase)."""
        sx, sy = self.image_w / self.w, self.image_h / self.h
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        r = float(radius)
        # only the cells near the stroke: centre (i + 0.5) * s - 0.5 within [min - r, max + r]
        i0, j0 = (np.floor((pts.min(axis=0) - r + 0.5) / (sx, sy) - 0.5)).astype(int)
        i1, j1 = (np.ceil((pts.max(axis=0) + r + 0.5) / (sx, sy) - 0.5)).astype(int) + 1
        i0, j0, i1, j1 = max(i0, 0), max(j0, 0), min(i1, self.w), min(j1, self.h)
        if i0 >= i1 or j0 >= j1:
            return self
        grid = self.array()
        px, py = np.meshgrid((np.arange(i0, i1) + 0.5) * sx - 0.5, (np.arange(j0, j1) + 0.5) * sy - 0.5)
        a = pts if len(pts) == 1 else pts[:-1]  # segment starts [S, 2]
        b = pts if len(pts) == 1 else pts[1:]  # segment ends
        hit = np.zeros(px.shape, dtype=bool)
        for (ax, ay), (bx, by) in zip(a, b, strict=True):
            dx, dy = bx - ax, by - ay
            seg2 = dx * dx + dy * dy
            t = np.clip(((px - ax) * dx + (py - ay) * dy) / seg2, 0.0, 1.0) if seg2 > 0 else 0.0
            hit |= (px - (ax + t * dx)) ** 2 + (py - (ay + t * dy)) ** 2 <= r * r
        grid[j0:j1, i0:i1][hit] = PAINT_VALUE[mode]
        return MaskGrid(self.image_w, self.image_h, self.w, self.h, grid.tobytes())

    def fixed_cells(self) -> np.ndarray | None:
        """[h, w] bool grid of fixed cells, or None when nothing is painted (no mask loss).

        With some flexible cell, every non-flexible cell is fixed (DragGAN: paint what may move);
        otherwise the cells painted fixed are fixed."""
        grid = self.array()
        if not grid.any():
            return None
        if (grid == FLEXIBLE).any():
            return grid != FLEXIBLE
        return grid == FIXED

    def fixed_region(self, height: int | None = None, width: int | None = None) -> np.ndarray | None:
        """[height, width] bool array (default: the image size), True where the image must stay
        fixed, or None when nothing is painted. Nearest-cell upsampling of :meth:`fixed_cells`."""
        cells = self.fixed_cells()
        if cells is None:
            return None
        height = self.image_h if height is None else height
        width = self.image_w if width is None else width
        rows = np.minimum((np.arange(height) * self.h) // height, self.h - 1)
        cols = np.minimum((np.arange(width) * self.w) // width, self.w - 1)
        return cells[rows[:, None], cols[None, :]]

    @property
    def has_flexible(self) -> bool:
        return FLEXIBLE in self.cells

    def flexible_region(self, height: int | None = None, width: int | None = None) -> np.ndarray | None:
        """[height, width] bool array, True inside the cells painted flexible (a blend's region),
        or None when no cell is flexible. Nearest-cell upsampling, like :meth:`fixed_region`."""
        if not self.has_flexible:
            return None
        height = self.image_h if height is None else height
        width = self.image_w if width is None else width
        rows = np.minimum((np.arange(height) * self.h) // height, self.h - 1)
        cols = np.minimum((np.arange(width) * self.w) // width, self.w - 1)
        return (self.array() == FLEXIBLE)[rows[:, None], cols[None, :]]
