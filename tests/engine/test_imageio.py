"""Upload validation: formats, limits, bombs, damaged files, modes, orientation, crop and resize."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from server.engine.imageio import UploadError, UploadLimits, load_upload, sniff_format


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _gradient(w: int, h: int) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], -1).astype(np.uint8), "RGB")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_allowed_formats_load_to_square_rgb(fmt):
    """PNG, JPEG and WebP uploads come back as uint8 [size, size, 3]."""
    out = load_upload(_encode(_gradient(120, 80), fmt), 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def test_centre_crop_keeps_the_middle():
    """A wide image is cropped to its centre square before resizing."""
    a = np.zeros((40, 120, 3), np.uint8)
    a[:, 40:80] = 255  # white centre square, black sides
    out = load_upload(_encode(Image.fromarray(a), "PNG"), 16)
    assert out.min() >= 230  # LANCZOS reaches a little past the crop box


@pytest.mark.parametrize(
    ("data", "word"),
    [
        (_encode(_gradient(20, 20), "GIF"), "GIF"),
        (b"hello, this is not a picture at all\n" * 4, "not an image"),
        (b"%PDF-1.4 fake", "PDF"),
    ],
)
def test_wrong_types_are_refused(data, word):
    """GIF, text and PDF uploads raise UploadError naming the problem."""
    with pytest.raises(UploadError, match=word):
        load_upload(data, 32)


def test_empty_and_oversize_bytes():
    """Empty files and files over max_bytes are refused before decoding."""
    with pytest.raises(UploadError, match="empty"):
        load_upload(b"", 32)
    data = _encode(_gradient(64, 64), "PNG")
    with pytest.raises(UploadError, match="limit"):
        load_upload(data, 32, UploadLimits(max_bytes=len(data) - 1))


def test_oversize_dimensions_are_refused_from_the_header():
    """Sides over max_side and areas over max_pixels are refused."""
    data = _encode(_gradient(300, 10), "PNG")
    with pytest.raises(UploadError, match="each side"):
        load_upload(data, 32, UploadLimits(max_side=256))
    with pytest.raises(UploadError, match="megapixels"):
        load_upload(data, 32, UploadLimits(max_pixels=2000))


def test_decompression_bomb_small_bytes_huge_dimensions():
    """A few-KB PNG claiming 20000 x 20000 pixels is refused without being decoded."""
    before = Image.MAX_IMAGE_PIXELS
    bomb = _encode(Image.new("1", (20000, 20000)), "PNG", optimize=True)
    assert len(bomb) < 200_000
    with pytest.raises(UploadError):
        load_upload(bomb, 32)
    # with our limits lifted, Pillow's own bomb guard still refuses it (as an UploadError)
    with pytest.raises(UploadError, match="decompression bomb"):
        load_upload(bomb, 32, UploadLimits(max_side=10**6, max_pixels=10**12))
    assert before == Image.MAX_IMAGE_PIXELS  # the global setting is untouched


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_are_refused(fmt):
    """A file cut in the middle raises UploadError, not a Pillow exception."""
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
    data = _encode(im, fmt)
    assert sniff_format(data) == fmt
    with pytest.raises(UploadError, match="truncated|damaged|decoded"):
        load_upload(data[: len(data) // 2], 32)


def test_rgba_is_composited_on_white_and_palette_is_converted():
    """Transparent pixels become white; palette and grey images become RGB."""
    rgba = Image.new("RGBA", (20, 20), (255, 0, 0, 0))
    out = load_upload(_encode(rgba, "PNG"), 8)
    assert (out == 255).all()
    pal = _gradient(30, 30).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    assert load_upload(_encode(pal, "PNG"), 8).shape == (8, 8, 3)
    la = Image.new("LA", (10, 10), (0, 255))
    assert (load_upload(_encode(la, "PNG"), 8) == 0).all()


def test_sixteen_bit_grey_and_cmyk():
    """16-bit grey PNGs keep their brightness; CMYK JPEGs become RGB."""
    a = np.full((16, 16), 65535 // 2, np.uint16)
    out = load_upload(_encode(Image.fromarray(a), "PNG"), 8)
    assert abs(int(out.mean()) - 127) <= 2
    cmyk = Image.new("CMYK", (16, 16), (0, 0, 0, 0))
    assert load_upload(_encode(cmyk, "JPEG"), 8).min() > 240


def test_exif_orientation_is_applied():
    """An image stored sideways with EXIF orientation 6 comes back upright."""
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = 255  # left half white as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    data = _encode(Image.fromarray(a), "PNG", exif=exif.tobytes())
    out = load_upload(data, 20)
    # stored 40 wide x 20 high; displayed 20 wide x 40 high, the white half on top
    assert out[:8].mean() > 240 and out[-8:].mean() < 15
    raw = load_upload(_encode(Image.fromarray(a), "PNG"), 20)  # no EXIF: white on the left
    assert raw[:, :8].mean() > 240 and raw[:, -8:].mean() < 15
