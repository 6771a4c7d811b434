"""Frame encoding, grids, point overlays and GIFs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from server.engine.media import (
    HANDLE_COLOUR,
    TARGET_COLOUR,
    decode_image,
    draw_points,
    encode_jpeg,
    encode_png,
    make_grid,
    write_gif,
)


def frame(h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_png_round_trips_and_jpeg_is_close() -> None:
    f = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (64, 1, 3))
    assert np.array_equal(decode_image(encode_png(f)), f)
    jpeg = encode_jpeg(f, quality=90)
    assert jpeg[:2] == b"\xff\xd8"
    assert np.abs(decode_image(jpeg).astype(int) - f).mean() < 3
    assert len(encode_jpeg(frame(), quality=20)) < len(encode_jpeg(frame(), quality=95))
    with pytest.raises(ValueError, match="quality"):
        encode_jpeg(f, quality=0)
    with pytest.raises(ValueError, match="uint8"):
        encode_png(f.astype(np.float32))


def test_grid_layout() -> None:
    imgs = [np.full((8, 10, 3), i * 40, np.uint8) for i in range(5)]
    g = make_grid(imgs, cols=2, pad=1)
    assert g.shape == (3 * 8 + 2, 2 * 10 + 1, 3)
    assert (g[9:17, 11:21] == 120).all()  # image 3: row 1, column 1
    assert (g[18:, 11:] == 0).all()  # the empty cell
    assert make_grid(imgs).shape == (16, 30, 3)  # about square: 3 columns
    with pytest.raises(ValueError, match="one size"):
        make_grid([frame(8, 8), frame(8, 9)])


def test_draw_points_colours_and_scale() -> None:
    f = np.zeros((32, 32, 3), np.uint8)
    out = draw_points(f, [(4, 4)], [(24, 20)], scale=4)
    assert out.shape == (128, 128, 3) and not np.shares_memory(out, f)
    assert tuple(out[4 * 4 + 1, 4 * 4 + 1]) == HANDLE_COLOUR
    assert tuple(out[20 * 4 + 1, 24 * 4 + 1]) == TARGET_COLOUR
    assert (out[30:70, 30:70] == 255).any()  # the white arrow between them
    assert f.max() == 0  # input untouched


def test_write_gif(tmp_path) -> None:
    frames = [frame(seed=i) for i in range(4)]
    pts = [([(3 + i, 3)], [(10, 3)]) for i in range(4)]
    p = write_gif(frames, tmp_path / "a" / "t.gif", fps=10, points=pts, scale=2)
    with Image.open(p) as im:
        assert im.n_frames == 4 and im.size == (64, 64) and im.info["loop"] == 0
        assert im.info["duration"] == 100
    with pytest.raises(ValueError, match="one .* entry per frame"):
        write_gif(frames, tmp_path / "b.gif", points=pts[:2])
