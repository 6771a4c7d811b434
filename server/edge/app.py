"""The livedrag web app: a thin Starlette layer around the room core, the worker and the fan-out.

Routes
  GET  /                                  web/index.html (start page)
  GET  /r/{room}                          web/room.html (the editor; capability in the #fragment)
  GET  /static/...                        files under web/
  POST /api/rooms                         JSON {seed?, truncation?} -> {room, edit_url, view_url,
                                          edit_token, view_token} (201; 429 per client: rate, live
                                          rooms; 503 when every live room is in use)
  DELETE /api/rooms/{room}                the room and its history (edit capability); its
                                          connections close with 4014 room_closed
  GET  /api/rooms/{room}/image.png        the committed image, rendered losslessly
  GET  /api/rooms/{room}/trajectory.gif   frames of the last (or running) drag, with its points
  GET  /api/rooms/{room}/latent.safetensors  the committed W+ ({"w_plus": [1, num_ws, w_dim]})
  POST /api/rooms/{room}/upload           a picture (raw body or multipart ``file``; edit capability
                                          only; ?method=encoder|optimize&steps=N) -> 202: the room
                                          projects it (status projecting), frames stream to everyone
  GET  /api/rooms/{room}/upload.png       the room's last uploaded picture (the projection's target)
  GET  /healthz                           model, device, rooms, connections, uptime
  GET  /api/info                          model name, resolution, available modes, protocol version
  WS   /ws/{room}                         the protocol of shared/protocol.md

The model is loaded once in the lifespan (``appstate.py``); the handlers are in ``routes.py``
(HTTP) and ``websocket.py`` (one connection each), the fan-out to connections in ``fanout.py``,
the uvicorn server in ``serve.py``. Every HTTP response gets the security headers below.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.core.limits import RoomLimits
from server.edge.appstate import AppState
from server.edge.config import Settings
from server.edge.model_routes import model_samples, models_list
from server.edge.routes import (
    create_room,
    delete_room,
    healthz,
    image_png,
    index,
    info,
    latent_file,
    room_page,
    trajectory,
    upload,
    upload_png,
)
from server.edge.websocket import websocket_room
from server.engine.generator import Generator
from server.worker.modes import EngineMode
from server.worker.projector import Projector

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class SecurityHeaders:
    """Adds nosniff / no-referrer / frame-deny headers to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", [])) + SECURITY_HEADERS}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(
    settings: Settings,
    *,
    generator: Generator | None = None,
    modes: dict[str, EngineMode] | None = None,
    room_limits: RoomLimits | None = None,
    projector: Projector | None = None,
) -> Starlette:
    """The ASGI app. ``generator``/``modes``/``room_limits``/``projector`` replace the checkpoint,
    the engine modes, the room caps and the projection engine (tests and benchmarks)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state = await AppState.start(settings, generator, modes, room_limits, projector)
        app.state.livedrag = state
        try:
            yield
        finally:
            await state.shutdown()

    room = "{room:str}"
    routes = [
        Route("/", index),
        Route(f"/r/{room}", room_page),
        Route("/api/rooms", create_room, methods=["POST"]),
        Route(f"/api/rooms/{room}", delete_room, methods=["DELETE"]),
        Route(f"/api/rooms/{room}/image.png", image_png),
        Route(f"/api/rooms/{room}/trajectory.gif", trajectory),
        Route(f"/api/rooms/{room}/latent.safetensors", latent_file),
        Route(f"/api/rooms/{room}/upload", upload, methods=["POST"]),
        Route(f"/api/rooms/{room}/upload.png", upload_png),
        Route("/healthz", healthz),
        Route("/api/info", info),
        Route("/api/models", models_list),
        Route("/api/models/{name}/samples.jpg", model_samples),
        WebSocketRoute(f"/ws/{room}", websocket_room),
        Mount("/static", StaticFiles(directory=settings.web_dir, check_dir=False), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(SecurityHeaders)
    return app
