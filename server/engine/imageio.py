"""Uploaded pictures -> square RGB arrays at the model resolution, refusing anything unsafe.

``load_upload(data, size)`` accepts PNG, JPEG and WebP only. In order, it checks:

1. the byte size (``UploadLimits.max_bytes``) and that there is anything at all;
2. the format, from the file's signature, with Pillow restricted to those three decoders
   (a GIF, a text file or a PDF are refused by name where the signature is known);
3. the dimensions read from the header, BEFORE any pixel is decoded: each side at most
   ``max_side``, width x height at most ``max_pixels`` (a decompression bomb: a few KB of PNG
   that claim 50 000 x 50 000 pixels never get decoded);
4. Pillow's own decompression-bomb check, turned into an error (``DecompressionBombWarning``
   is raised as an error inside the call only; no global setting is changed);
5. decoding, where truncated or damaged files fail with a clear message (Pillow does not load
   truncated images unless told to, and this module never tells it to).

Then the picture is turned upright (EXIF orientation), converted to RGB (alpha is composited on
white; palette, grey, CMYK and 16-bit grey images are handled), centre-cropped to a square and
resized (LANCZOS) to ``size`` x ``size``. Pillow and numpy only: no torch here.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP")

# signatures of formats people upload by mistake, for a message that names them
_KNOWN_OTHER = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"%PDF", "PDF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"<svg", "SVG"),
    (b"<?xml", "SVG/XML"),
)


class UploadError(ValueError):
    """An upload that cannot be used; the message is meant for the person who sent it."""


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 8 * 2**20  # file size
    max_side: int = 8192  # width and height, each
    max_pixels: int = 40_000_000  # width x height

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_side < 1 or self.max_pixels < 1:
            raise ValueError("upload limits must be positive")


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def sniff_format(data: bytes) -> str | None:
    """'PNG', 'JPEG', 'WEBP' from the file signature, another name for known others, else None."""
    head = bytes(data[:16])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    for magic, name in _KNOWN_OTHER:
        if head.startswith(magic):
            return name
    return None


def _open_checked(data: bytes, limits: UploadLimits) -> Image.Image:
    """Open lazily (header only) and check format and dimensions; nothing is decoded yet."""
    kind = sniff_format(data)
    if kind is None:
        raise UploadError("not an image: upload a PNG, JPEG or WebP picture")
    if kind not in ALLOWED_FORMATS:
        raise UploadError(f"{kind} files are not supported: upload a PNG, JPEG or WebP picture")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UploadError(f"image refused: too many pixels for its size (decompression bomb: {e})") from None
    except UnidentifiedImageError:
        raise UploadError(f"the file looks like {kind} but cannot be read: it is damaged") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise UploadError(f"the {kind} file is damaged ({e})") from None
    if im.format not in ALLOWED_FORMATS:
        raise UploadError(f"{im.format} files are not supported: upload a PNG, JPEG or WebP picture")
    w, h = im.size
    if w < 1 or h < 1:
        raise UploadError(f"the image has no pixels ({w} x {h})")
    if w > limits.max_side or h > limits.max_side:
        raise UploadError(f"the image is {w} x {h} pixels; each side may be at most {limits.max_side}")
    if w * h > limits.max_pixels:
        raise UploadError(
            f"the image is {w} x {h} = {w * h / 1e6:.1f} megapixels; "
            f"at most {limits.max_pixels / 1e6:.0f} allowed"
        )
    return im


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any decoded mode -> RGB; transparency is composited on white; 16-bit grey is rescaled."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or (im.mode == "I" and a.max() > 255) else 255.0
        if im.mode == "F":
            hi = max(1.0, float(a.max()))
        im = Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    has_alpha = im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (
        im.mode in ("P", "L", "RGB") and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def center_crop_resize(im: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square (the shorter side) and resize to ``size`` x ``size`` (LANCZOS)."""
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return im.resize((size, size), Image.Resampling.LANCZOS, box=(left, top, left + side, top + side))


def load_upload(data: bytes, size: int, limits: UploadLimits = UploadLimits()) -> np.ndarray:
    """Uploaded bytes -> uint8 [size, size, 3]; raises ``UploadError`` for anything bad (see module doc)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    data = bytes(data)
    if not data:
        raise UploadError("the file is empty")
    if len(data) > limits.max_bytes:
        raise UploadError(f"the file is {_mb(len(data))}; the limit is {_mb(limits.max_bytes)}")
    im = _open_checked(data, limits)
    kind = im.format
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if kind == "JPEG":
                im.draft("RGB", (2 * size, 2 * size))  # decode at a reduced DCT scale when large
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)  # animated PNG / WebP: the first frame
            im.load()
            im = ImageOps.exif_transpose(im) or im
            rgb = _to_rgb(im)
            out = center_crop_resize(rgb, size)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UploadError(f"image refused: too many pixels (decompression bomb: {e})") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError) as e:
        msg = str(e)
        if "truncated" in msg or "broken" in msg.lower() or isinstance(e, EOFError):
            raise UploadError(f"the {kind} file is truncated or damaged; upload it again ({msg})") from None
        raise UploadError(f"the {kind} file cannot be decoded ({msg})") from None
    arr = np.array(out, dtype=np.uint8)  # a writable copy
    if arr.shape != (size, size, 3):  # defensive: every path above produces RGB
        raise UploadError(f"the image decoded to an unexpected shape {arr.shape}")
    return np.ascontiguousarray(arr)
