"""`livedrag synthfaces` writes a grid PNG with ceil(sqrt(n)) columns."""

from __future__ import annotations

from PIL import Image

from server.cli import main


def test_grid_with_landmarks(tmp_path):
    """Nine 32 px faces make a 3 x 3 grid; --landmarks draws dots (the picture changes)."""
    plain, dots = tmp_path / "plain.png", tmp_path / "dots.png"
    assert main(["synthfaces", "--n", "9", "--size", "32", "--out", str(plain)]) == 0
    assert main(["synthfaces", "--n", "9", "--size", "32", "--out", str(dots), "--landmarks"]) == 0
    a, b = Image.open(plain), Image.open(dots)
    assert a.size == b.size == (96, 96)
    assert a.tobytes() != b.tobytes()
