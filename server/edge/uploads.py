"""Reading an uploaded picture from an HTTP request, before the engine sees it (no Starlette here).

The app streams the body through :func:`read_limited` (stops at the cap: 413, never buffers more),
takes the picture out of a raw body or a ``multipart/form-data`` one (:func:`picture_bytes`), and
checks its first bytes (:func:`sniff`: PNG, JPEG or WebP, else 415) before
``server.engine.imageio.load_upload`` decodes and checks it off the event loop (400 with the
engine's message). Each failure is an :class:`UploadRefused` carrying the HTTP status and a
message shown to the user as is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

MULTIPART_SLACK = 16 * 1024  # multipart headers and boundaries on top of the picture's own cap
RAW_TYPES = ("image/png", "image/jpeg", "image/webp", "application/octet-stream")
METHODS = ("encoder", "optimize")


class UploadRefused(Exception):
    """An upload that is refused: ``status`` is the HTTP status, the message is shown as is."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_limited(
    chunks: AsyncIterator[bytes], content_length: str | None, limit: int, content_type: str = ""
) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` (plus multipart slack):
    a declared Content-Length over it is refused before anything is read."""
    cap = limit + (MULTIPART_SLACK if content_type.startswith("multipart/") else 0)
    too_large = UploadRefused(413, f"the picture is larger than {limit // 2**20 or limit} {_unit(limit)}")
    if content_length is not None:
        if not content_length.strip().isdigit():
            raise UploadRefused(400, "bad Content-Length")
        if int(content_length) > cap:
            raise too_large
    parts, n = [], 0
    async for chunk in chunks:
        n += len(chunk)
        if n > cap:
            raise too_large
        parts.append(chunk)
    return b"".join(parts)


def _unit(limit: int) -> str:
    return "MiB" if limit >= 2**20 else "bytes"


def picture_bytes(body: bytes, content_type: str, limit: int) -> bytes:
    """The picture's bytes from a raw body (image/png, image/jpeg, image/webp, octet-stream or no
    type) or from the ``file`` (or first file) part of a multipart/form-data body."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype.startswith("multipart/"):
        if ctype != "multipart/form-data":
            raise UploadRefused(415, f"send the picture as multipart/form-data, not {ctype}")
        data = _multipart_file(body, _params(content_type))
    elif ctype in RAW_TYPES or ctype == "":
        data = body
    else:
        raise UploadRefused(415, f"unsupported upload type {ctype[:60]!r}: send a PNG, JPEG or WebP picture")
    if not data:
        raise UploadRefused(400, "the upload is empty")
    if len(data) > limit:
        raise UploadRefused(413, f"the picture is larger than {limit // 2**20 or limit} {_unit(limit)}")
    return data


def sniff(data: bytes) -> str:
    """The picture's format from its first bytes ("PNG", "JPEG", "WEBP"); 415 for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    raise UploadRefused(415, "this is not a PNG, JPEG or WebP picture")


def upload_options(
    query: Mapping[str, str], default_steps: int, max_steps: int, methods: list[str]
) -> tuple[str, int]:
    """``method`` (encoder | optimize; default optimize) and ``steps`` (1..max_steps) from the query."""
    method = query.get("method", "optimize")
    if method not in METHODS:
        raise UploadRefused(400, "method must be encoder or optimize")
    if method not in methods:
        raise UploadRefused(400, "this server has no encoder for this model: use method optimize")
    raw = query.get("steps")
    if raw is None:
        return method, min(default_steps, max_steps)
    if not raw.isdigit() or not 1 <= int(raw) <= max_steps:
        raise UploadRefused(400, f"steps must be a whole number in 1..{max_steps}")
    return method, int(raw)


def _params(content_type: str) -> dict[str, str]:
    out = {}
    for item in content_type.split(";")[1:]:
        key, _, value = item.strip().partition("=")
        out[key.strip().lower()] = value.strip().strip('"')
    return out


def _multipart_file(body: bytes, params: dict[str, str]) -> bytes:
    boundary = params.get("boundary", "")
    if not 1 <= len(boundary) <= 200:
        raise UploadRefused(400, "multipart body without a boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    found: list[tuple[dict[str, str], bytes]] = []
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            raise UploadRefused(400, "malformed multipart body")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip():
                headers[name.strip().lower()] = value.strip()
        if content.endswith(b"\r\n"):
            content = content[:-2]
        disposition = _params("x;" + headers.get("content-disposition", "").partition(";")[2])
        found.append((disposition, content))
    for disposition, content in found:
        if disposition.get("name") == "file":
            return content
    for disposition, content in found:
        if "filename" in disposition:
            return content
    raise UploadRefused(400, "the multipart body has no file part (name it file)")
