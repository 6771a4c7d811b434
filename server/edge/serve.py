"""Serving the app with uvicorn: the settings livedrag needs, redacted logs, a draining shutdown.

Query strings are never logged: :class:`RedactQueryFilter` strips them from uvicorn's access and
websocket log lines (install it with :func:`install_log_filters`, as :func:`uvicorn_config` does).

Shutdown: the uvicorn server used here (:class:`Server`) first drains the app: the worker
finishes its tick and commits every running drag (members see the ``finish`` op and the
``status``), then every connection is closed with 4012 ``shutting_down`` after its queued control
messages; only then does uvicorn close the listening sockets' remaining connections. The lifespan's
exit saves every room and closes the store (it also drains, for servers that are not ours).

Message size: the app closes a message over the protocol's cap (``max_message_bytes``, 32 KiB) with
4009 ``too_large``, after an ``error``. uvicorn reads at most ``ws_max_size`` (4x the cap) into
memory; above that, websockets' parser fails the connection itself, with 1009. :class:`WSProtocol`
(uvicorn's websockets sans-I/O protocol) makes that close 4009 ``too_large`` too, so every message
over the cap closes with the same documented code whatever its size (without the ``error`` first
when it is over ``ws_max_size``: it is never read whole).
"""

from __future__ import annotations

import logging
from typing import Any

import uvicorn
from starlette.applications import Starlette

from server.core.protocol import close_spec
from server.edge.appstate import AppState
from server.edge.config import Settings

try:  # uvicorn >= 0.35 with websockets >= 13
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from websockets.frames import CloseCode
    from websockets.server import ServerProtocol
except ImportError:  # pragma: no cover - older uvicorn: oversize frames close with its 1009
    WebSocketsSansIOProtocol = None


class RedactQueryFilter(logging.Filter):
    """Strips query strings (which may carry ``cap=``) from uvicorn's access and websocket logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, str) and "?" in a for a in args):
            record.args = tuple(_redact(a) if isinstance(a, str) else a for a in args)
        return True


def _redact(s: str) -> str:
    head, sep, _ = s.partition("?")
    return head + "?[redacted]" if sep else s


def install_log_filters() -> None:
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactQueryFilter) for f in logger.filters):
            logger.addFilter(RedactQueryFilter())


class Server(uvicorn.Server):
    """uvicorn's server, draining the app (commit drags, close 4012) before it shuts connections."""

    async def shutdown(self, sockets: Any = None) -> None:
        state = getattr(getattr(self.config.app, "state", None), "livedrag", None)
        if isinstance(state, AppState):
            await state.drain()
        await super().shutdown(sockets)


if WebSocketsSansIOProtocol is not None:

    class _TooLargeIs4009(ServerProtocol):
        """websockets' server protocol, failing a message over ``max_size`` with 4009 too_large."""

        def fail(self, code: int, reason: str = "") -> None:
            if code == CloseCode.MESSAGE_TOO_BIG:
                spec = close_spec("too_large")
                code, reason = spec.code, spec.reason
            super().fail(code, reason)

    class WSProtocol(WebSocketsSansIOProtocol):
        """uvicorn's websockets protocol whose frame cap closes with the protocol's 4009 too_large."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            old = self.conn
            self.conn = _TooLargeIs4009(
                extensions=old.available_extensions, max_size=self.config.ws_max_size, logger=old.logger
            )

else:  # pragma: no cover
    WSProtocol = None


def uvicorn_config(app: Starlette, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """uvicorn settings for livedrag: no per-message deflate, the inbound cap, redacted logs."""
    kw: dict[str, Any] = dict(
        host=settings.host,
        port=settings.port,
        ws_max_size=settings.ws_max_size,
        ws=WSProtocol or "auto",  # over ws_max_size: 4009 too_large as well, not 1009
        ws_per_message_deflate=False,
        log_level=settings.log_level,
        access_log=settings.access_log,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    kw.update(overrides)
    config = uvicorn.Config(app, **kw)
    install_log_filters()
    return config
