"""The livedrag web app: a thin Starlette layer around the room core, the worker and the fan-out.

Routes
  GET  /                                  web/index.html (start page)
  GET  /r/{room}                          web/room.html (the editor; capability in the #fragment)
  GET  /static/...                        files under web/
  POST /api/rooms                         JSON {seed?, truncation?} -> {room, edit_url, view_url,
                                          edit_token, view_token} (201; 503 when the server is full)
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

The model is loaded once in the lifespan, which also opens the store, restores the rooms and starts
the worker. All model work runs on the worker's thread; handlers only await it.

Downloads are authorised by a capability: either of the room's tokens (edit or view), as the
query parameter ``cap=`` (what links in the page use) or the header ``X-Livedrag-Cap``. Uploads
need the edit capability (a view one gets 403). An upload is refused, with a JSON ``{"error"}`` and
nothing changed, when the room is busy (409), over ``max_upload_bytes`` (413, checked while the
body streams in), not a PNG/JPEG/WebP picture (415), bad (400: truncated, too many pixels, a
decompression bomb... as ``load_upload`` says) or over ``uploads_per_minute`` for the room (429). Room ids
are short and appear in URLs and logs, so they are not secrets. Query strings are never logged:
:class:`RedactQueryFilter` strips them from uvicorn's access and websocket log lines (install it
with :func:`install_log_filters`, as :func:`uvicorn_config` does). Capabilities for websockets
travel only in the hello message.

Websocket security: the Origin header is checked against the allow-list before the handshake
completes (refused: HTTP 403, i.e. close 4003 ``origin_forbidden`` before accept). The default
allow-list is the server's own host (Origin host:port equal to the Host header); ``origins`` in the
settings adds others, ``*`` allows any. Requests without an Origin header come from non-browser
clients, which could forge it anyway, and are allowed (the capability still decides). Inbound
messages are capped at the protocol's 32 KiB (close 4009 ``too_large``; uvicorn's own
``ws_max_size`` is 4x that, larger frames are cut by uvicorn with 1009); every message is decoded
strictly and rate-limited per connection by the room core; connections per server and per address
are capped (close 4006 ``server_full``); a hello must arrive within ``hello_timeout_s`` (4008) and a
connection silent for ``idle_timeout_s`` is closed (4015). Per-message deflate is off (frames are
JPEG already).

Shutdown: the uvicorn server used here (:class:`Server`) first drains the app: the worker
finishes its tick and commits every running drag (members see the ``finish`` op and the
``status``), then every connection is closed with 4012 ``shutting_down`` after its queued control
messages; only then does uvicorn close the listening sockets' remaining connections. The lifespan's
exit saves every room and closes the store (it also drains, for servers that are not ours).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from server.core.ids import token_matches
from server.core.limits import RoomLimits
from server.core.members import JoinRefused
from server.core.outgoing import Disconnect, Outgoing
from server.core.protocol import PROTOCOL_VERSION, ProtocolError, close_spec, decode_hello, error_message
from server.core.protocol_spec import LIMITS
from server.core.ratelimit import TokenBucket
from server.core.room import Room
from server.core.state import ImageInfo
from server.edge.config import Settings
from server.edge.fanout import Hub, Sender, SenderLimits, with_timeout
from server.edge.uploads import UploadRefused, picture_bytes, read_limited, sniff, upload_options
from server.engine.checkpoint import load_generator
from server.engine.generator import Generator
from server.storage.manager import RoomManager, RoomsFull
from server.storage.store import Store, StoreError
from server.worker.loop import Worker
from server.worker.media import trajectory_gif
from server.worker.modes import EngineMode, default_modes
from server.worker.projector import Projector
from server.worker.state import EngineError

log = logging.getLogger(__name__)

MAX_BODY = 4096  # POST /api/rooms body
CAP_HEADER = "x-livedrag-cap"
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def pick_device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_name(G: Generator, checkpoint: str | None) -> str:
    name = G.cfg.name or (Path(checkpoint).stem if checkpoint else "generator")
    return name[:64]


@dataclass
class AppState:
    """Everything the handlers share (one per app, built in the lifespan)."""

    settings: Settings
    G: Generator
    model: str
    device: torch.device
    store: Store
    manager: RoomManager
    hub: Hub
    worker: Worker
    started: float = field(default_factory=time.time)
    closing: bool = False
    connections: int = 0
    per_ip: dict[str, int] = field(default_factory=dict)
    create_buckets: OrderedDict[str, TokenBucket] = field(default_factory=OrderedDict)
    upload_buckets: dict[str, TokenBucket] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _drained: bool = False
    _closed: bool = False

    @classmethod
    async def start(
        cls,
        settings: Settings,
        generator: Generator | None = None,
        modes: dict[str, EngineMode] | None = None,
        room_limits: RoomLimits | None = None,
        projector: Projector | None = None,
    ) -> AppState:
        device = pick_device(settings.device)
        if generator is None:
            G = await asyncio.to_thread(load_generator, settings.checkpoint, device)
        else:
            G = generator.to(device)
        name = model_name(G, settings.checkpoint)
        if modes is None:
            modes = default_modes(await asyncio.to_thread(load_predictor_for, G, settings.predictor))
        if projector is None:
            projector = await asyncio.to_thread(Projector.load, G, settings.encoder)
        store = await asyncio.to_thread(Store, settings.data_dir)
        limits = room_limits or RoomLimits(
            max_rooms=settings.max_rooms, max_editors=settings.max_editors, max_viewers=settings.max_viewers
        )
        manager = RoomManager(store, limits)
        restored = manager.load()
        hub = Hub()
        worker = Worker(
            G,
            manager,
            hub,
            model_name=name,
            max_fps=settings.max_fps,
            tick_budget_s=settings.tick_budget_s,
            jpeg_quality=settings.jpeg_quality,
            trajectory_frames=settings.trajectory_frames,
            modes=modes,
            projector=projector,
            pti_steps=settings.pti_steps,
            pti_max_rooms=settings.pti_max_rooms,
        )
        state = cls(settings, G, name, device, store, manager, hub, worker)
        worker.start()
        state.tasks.append(asyncio.get_running_loop().create_task(state._presence_loop(), name="presence"))
        log.info(
            "model %s (%dx%d) on %s; %d room(s) restored from %s; modes: %s",
            name,
            G.img_resolution,
            G.img_resolution,
            device,
            restored,
            store.path,
            ", ".join(worker.available_modes),
        )
        return state

    async def _presence_loop(self) -> None:
        """Throttled cursor positions whose turn has come (the latest always goes out)."""
        interval = 1.0 / float(self.manager.limits.cursor_hz)
        while True:
            await asyncio.sleep(interval)
            for room_id, outs in self.manager.flush_presence().items():
                room = self.manager.get(room_id)
                if room is not None:
                    self.hub.dispatch(room, outs)

    async def drain(self) -> None:
        """Commit running drags, then close every connection with 4012 (idempotent)."""
        if self._drained:
            return
        self._drained = True
        self.closing = True
        try:
            await self.worker.stop(commit=True)
        except Exception:
            log.exception("stopping the worker failed")
        senders = self.hub.senders()
        for s in senders:
            s.close("shutting_down")
        await asyncio.gather(*(s.wait(timeout=3.0) for s in senders), return_exceptions=True)
        if senders:
            log.info("closed %d connection(s) with 4012 shutting_down", len(senders))

    async def shutdown(self) -> None:
        await self.drain()
        if self._closed:
            return
        self._closed = True
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        failed = self.manager.persist_all()
        if failed:
            log.error("%d room(s) could not be saved at shutdown", failed)
        self.store.close()
        log.info("stopped")

    # --- checks -----------------------------------------------------------------------------

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        if origin is None:
            return True  # not a browser: the capability decides
        allowed = self.settings.origins
        if "*" in allowed:
            return True
        origin = origin.strip().rstrip("/").lower()
        if origin in (o.lower() for o in allowed):
            return True
        netloc = urlsplit(origin).netloc
        return bool(netloc) and host is not None and netloc == host.strip().lower()

    def allow_create(self, ip: str) -> bool:
        bucket = self.create_buckets.get(ip)
        if bucket is None:
            rate = self.settings.rooms_per_minute / 60.0
            bucket = self.create_buckets[ip] = TokenBucket(rate, max(1.0, 2 * self.settings.rooms_per_minute))
            while len(self.create_buckets) > 4096:
                self.create_buckets.popitem(last=False)
        self.create_buckets.move_to_end(ip)
        return bucket.take()

    def allow_upload(self, room_id: str) -> bool:
        bucket = self.upload_buckets.get(room_id)
        if bucket is None:
            rate = self.settings.uploads_per_minute
            bucket = self.upload_buckets[room_id] = TokenBucket(rate / 60.0, max(1.0, 2 * rate))
            for gone in [r for r in self.upload_buckets if r not in self.manager.rooms]:
                del self.upload_buckets[gone]
        return bucket.take()


def load_predictor_for(G: Generator, path: str | None) -> Any | None:
    """The predictor bundle for ``G``: from ``path``, else the shipped one. A missing or unfitting
    shipped predictor only turns predict mode off; a named file that fails stops the start-up."""
    from server.engine.predictor_io import PredictorError, PredictorNotFoundError, load_predictor

    try:
        return load_predictor(path, G=G)
    except PredictorNotFoundError:
        if path is not None:
            raise
        log.info("no predictor for this model: predict mode is off")
    except PredictorError as e:
        if path is not None:
            raise
        log.warning("the shipped predictor does not fit this model (%s): predict mode is off", e)
    return None


def _state(request: Request | WebSocket) -> AppState:
    return request.app.state.livedrag


def _client_ip(conn: Request | WebSocket) -> str:
    return conn.client.host if conn.client else "unknown"


# --- pages ---------------------------------------------------------------------------------------


def _page(request: Request, name: str) -> Response:
    path = _state(request).settings.web_dir / name
    if not path.is_file():
        return PlainTextResponse(f"web client not installed ({name} missing)", status_code=404)
    return FileResponse(path, headers={"cache-control": "no-cache"})


async def index(request: Request) -> Response:
    return _page(request, "index.html")


async def room_page(request: Request) -> Response:
    return _page(request, "room.html")


# --- API -----------------------------------------------------------------------------------------


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={"cache-control": "no-store"})


async def create_room(request: Request) -> Response:
    state = _state(request)
    if not state.origin_allowed(request.headers.get("origin"), request.headers.get("host")):
        return _error(403, "origin not allowed")
    if state.closing:
        return _error(503, "server is shutting down")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        return _error(413, f"body larger than {MAX_BODY} bytes")
    body = await request.body()
    if len(body) > MAX_BODY:
        return _error(413, f"body larger than {MAX_BODY} bytes")
    try:
        seed, truncation = _parse_create(body)
    except ValueError as e:
        return _error(400, str(e))
    if not state.allow_create(_client_ip(request)):
        return _error(429, "too many rooms created from this address; wait a minute")
    res = state.G.img_resolution
    image = ImageInfo(state.model, res, res, seed=seed, truncation=truncation)
    try:
        created = state.manager.create(image)
    except RoomsFull:
        return _error(503, "this server holds as many rooms as it may; try later")
    except StoreError as e:
        log.error("creating a room failed: %s", e)
        return _error(503, "the server could not save the room")
    base = str(request.base_url).rstrip("/")
    return JSONResponse(
        {
            "room": created.room_id,
            "edit_url": base + created.edit_path,
            "view_url": base + created.view_path,
            "edit_token": created.edit_token,
            "view_token": created.view_token,
            "seed": seed,
            "truncation": truncation,
        },
        status_code=201,
        headers={"cache-control": "no-store"},
    )


def _parse_create(body: bytes) -> tuple[int, float]:
    data: Any = {}
    if body.strip():
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise ValueError("body must be a JSON object") from None
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    unknown = sorted(set(data) - {"seed", "truncation"})
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(unknown)}")
    seed = data.get("seed")
    if seed is None:
        seed = secrets.randbelow(2**32)
    elif type(seed) is not int or not 0 <= seed < 2**32:
        raise ValueError("seed must be an integer in [0, 2^32)")
    truncation = data.get("truncation", 0.7)
    if type(truncation) not in (int, float) or not math.isfinite(truncation) or not 0 <= truncation <= 2:
        raise ValueError("truncation must be a number in [0, 2]")
    return seed, float(truncation)


def _authorised_room(request: Request, edit: bool = False) -> Room | Response:
    """The room named in the path when the request carries one of its capabilities (``edit``:
    its edit capability); else the 404/403 answer."""
    state = _state(request)
    room = state.manager.get(request.path_params["room"])
    if room is None:
        return _error(404, "no such room")
    cap = request.query_params.get("cap") or request.headers.get(CAP_HEADER)
    is_edit = bool(cap) and token_matches(cap, room.edit_hash)
    if not cap or not (is_edit or token_matches(cap, room.view_hash)):
        return _error(403, "a capability of this room is needed (cap= or X-Livedrag-Cap)")
    if edit and not is_edit:
        return _error(403, "uploading needs the room's edit link; a view-only link may only watch")
    return room


def _download(data: bytes, media_type: str, filename: str) -> Response:
    return Response(
        data,
        media_type=media_type,
        headers={"cache-control": "no-store", "content-disposition": f'inline; filename="{filename}"'},
    )


async def image_png(request: Request) -> Response:
    room = _authorised_room(request)
    if isinstance(room, Response):
        return room
    try:
        data = await _state(request).worker.image_png(room.image, room.id)
    except Exception as e:
        return _engine_error("image", room, e)
    return _download(data, "image/png", f"livedrag-{room.id}.png")


async def latent_file(request: Request) -> Response:
    room = _authorised_room(request)
    if isinstance(room, Response):
        return room
    try:
        data = await _state(request).worker.latent_bytes(room.image)
    except Exception as e:
        return _engine_error("latent", room, e)
    return _download(data, "application/octet-stream", f"livedrag-{room.id}.safetensors")


async def trajectory(request: Request) -> Response:
    room = _authorised_room(request)
    if isinstance(room, Response):
        return room
    items = await _state(request).worker.trajectory(room.id)
    if not items:
        return _error(404, "no drag has run in this room since the server started")
    data = await asyncio.to_thread(trajectory_gif, items)
    return _download(data, "image/gif", f"livedrag-{room.id}-drag.gif")


async def upload(request: Request) -> Response:
    """POST a picture: validated off the event loop, stored by content key, then projected."""
    state = _state(request)
    room = _authorised_room(request, edit=True)
    if isinstance(room, Response):
        return room
    if state.closing:
        return _error(503, "server is shutting down")
    settings, res = state.settings, state.G.img_resolution
    try:
        method, steps = upload_options(
            request.query_params,
            settings.project_steps,
            room.limits.max_project_steps,
            state.worker.projector.methods,
        )
        if room.busy:
            raise UploadRefused(409, "a drag or projection is running in this room: stop it first")
        if not state.allow_upload(room.id):
            raise UploadRefused(429, "too many uploads to this room; wait a minute")
        ctype = request.headers.get("content-type", "")
        body = await read_limited(
            request.stream(), request.headers.get("content-length"), settings.max_upload_bytes, ctype
        )
        data = picture_bytes(body, ctype, settings.max_upload_bytes)
        sniff(data)
        target_png = await asyncio.to_thread(_prepare_upload, data, res, settings.max_upload_bytes)
        info = await asyncio.to_thread(state.store.put_upload, target_png, res, res)
        if state.manager.get(room.id) is not room:
            raise UploadRefused(404, "the room was deleted")
        out = state.manager.start_upload(room.id, info, method, steps)
    except UploadRefused as e:
        if e.status != 413:
            log.info("room %s: upload refused (%d): %s", room.id, e.status, e)
        return _error(e.status, str(e))
    except StoreError as e:
        log.error("room %s: storing an upload failed: %s", room.id, e)
        return _error(503, "the server could not store the picture")
    except ProtocolError:  # busy: someone started a drag while the picture was checked
        return _error(409, "a drag or projection is running in this room: stop it first")
    state.hub.dispatch(room, out)
    state.worker.wake()
    assert room.task is not None
    return JSONResponse(
        {
            "upload": info.key,
            "w": info.w,
            "h": info.h,
            "method": room.task.method,
            "max_steps": room.task.max_steps,
            "drag": room.drag,
            "version": room.version,
        },
        status_code=202,
        headers={"cache-control": "no-store"},
    )


def _prepare_upload(data: bytes, size: int, max_bytes: int) -> bytes:
    """Decode and check the picture (engine rules), crop and resize it: the target as PNG bytes."""
    from server.engine.imageio import UploadError, UploadLimits, load_upload
    from server.engine.media import encode_png

    try:
        target = load_upload(data, size, UploadLimits(max_bytes=max_bytes))
    except UploadError as e:
        raise UploadRefused(400, str(e)) from None
    return encode_png(target, compress_level=6)


async def upload_png(request: Request) -> Response:
    room = _authorised_room(request)
    if isinstance(room, Response):
        return room
    if room.upload is None:
        return _error(404, "no picture has been uploaded to this room")
    try:
        data = await asyncio.to_thread(_state(request).store.get_upload, room.upload.key)
    except StoreError as e:
        log.error("room %s: reading the upload failed: %s", room.id, e)
        data = None
    if data is None:
        return _error(404, "the uploaded picture is no longer stored")
    return _download(data, "image/png", f"livedrag-{room.id}-upload.png")


def _engine_error(what: str, room: Room, e: Exception) -> Response:
    log.warning("room %s: %s download failed: %s", room.id, what, e)
    detail = f": {e}" if isinstance(e, EngineError) else ""  # others may name server paths
    return _error(500, f"could not produce the {what}{detail}")


async def healthz(request: Request) -> Response:
    state = _state(request)
    rooms = state.manager.rooms.values()
    return JSONResponse(
        {
            "ok": not state.closing,
            "warm": state.worker.warm,
            "model": state.model,
            "resolution": state.G.img_resolution,
            "device": str(state.device),
            "rooms": len(state.manager.rooms),
            "running": sum(r.status.value != "idle" for r in rooms),
            "connections": state.connections,
            "uptime_s": round(time.time() - state.started, 1),
            "engine": {
                "ticks": state.worker.stats.ticks,
                "steps": state.worker.stats.steps,
                "renders": state.worker.stats.renders,
                "errors": state.worker.stats.errors,
                "busy_s": round(state.worker.stats.busy_s, 3),
                "cpu_s": round(state.worker.stats.cpu_s, 3),
            },
        },
        headers={"cache-control": "no-store"},
    )


async def info(request: Request) -> Response:
    state = _state(request)
    return JSONResponse(
        {
            "model": state.model,
            "resolution": state.G.img_resolution,
            "modes": state.worker.available_modes,
            "projection": state.worker.projector.methods,
            "project_steps": state.settings.project_steps,
            "max_upload_bytes": state.settings.max_upload_bytes,
            "protocol_version": PROTOCOL_VERSION,
            "max_fps": state.settings.max_fps,
        },
        headers={"cache-control": "no-cache"},
    )


# --- websocket -----------------------------------------------------------------------------------


class Connection:
    """One websocket: handshake, then receive -> room -> fan-out until either side ends it."""

    def __init__(self, state: AppState, ws: WebSocket, room_id: str) -> None:
        self.state = state
        self.ws = ws
        self.room_id = room_id
        self.ip = _client_ip(ws)
        self.member_id: str | None = None
        self.sender: Sender | None = None
        self._deadline: asyncio.Timeout | None = None  # the receive loop's, while it waits

    async def run(self) -> None:
        state, ws = self.state, self.ws
        if not state.origin_allowed(ws.headers.get("origin"), ws.headers.get("host")):
            log.warning(
                "refused a websocket from %s: origin %r not allowed", self.ip, ws.headers.get("origin")
            )
            await ws.close(close_spec("origin_forbidden").code)  # before accept: HTTP 403
            return
        await ws.accept()
        if state.closing:
            await self._close_now("shutting_down")
            return
        s = state.settings
        if state.connections >= s.max_connections or state.per_ip.get(self.ip, 0) >= s.max_connections_per_ip:
            log.warning("refused a websocket from %s: connection cap reached", self.ip)
            await self._close_now("server_full")
            return
        state.connections += 1
        state.per_ip[self.ip] = state.per_ip.get(self.ip, 0) + 1
        try:
            await self._session()
        finally:
            state.connections -= 1
            left = state.per_ip.get(self.ip, 1) - 1
            if left > 0:
                state.per_ip[self.ip] = left
            else:
                state.per_ip.pop(self.ip, None)

    async def _close_now(self, close: str, messages: list[dict[str, Any]] | None = None) -> None:
        """Close before a sender exists (handshake failures), sending ``messages`` first."""
        spec = close_spec(close)
        with contextlib.suppress(Exception):
            for m in messages or []:
                await with_timeout(self.ws.send_bytes(Outgoing(m).data), 2.0)
            await with_timeout(self.ws.close(spec.code, spec.reason), 2.0)

    async def _hello(self) -> dict[str, Any] | None:
        try:
            msg = await with_timeout(self.ws.receive(), self.state.settings.hello_timeout_s)
        except TimeoutError:
            log.info("websocket from %s: no hello in time (room %s)", self.ip, self.room_id)
            await self._close_now("hello_timeout")
            return None
        if msg["type"] == "websocket.disconnect":
            return None
        data = msg.get("bytes")
        if data is None:
            err = ProtocolError("malformed", "binary msgpack messages only", close="bad_hello")
        elif len(data) > LIMITS["max_message_bytes"]:
            err = ProtocolError("too_large", f"hello of {len(data)} bytes", close="too_large")
        else:
            try:
                return decode_hello(data)
            except ProtocolError as e:
                err = e
        log.info("websocket from %s: bad hello for room %s (%s)", self.ip, self.room_id, err)
        await self._close_now(err.close or "bad_hello", [err.to_message()])
        return None

    async def _session(self) -> None:
        state = self.state
        hello = await self._hello()
        if hello is None:
            return
        try:
            joined = state.manager.join(self.room_id, hello)
        except JoinRefused as e:
            log.info("websocket from %s: join refused: room %s, %s", self.ip, self.room_id, e)
            await self._close_now(e.close)
            return
        room = state.manager.get(self.room_id)
        assert room is not None
        mid = self.member_id = joined.member_id
        s = state.settings
        sender = self.sender = Sender(
            self.ws,
            SenderLimits(s.frame_credits, s.control_queue, s.send_timeout_s),
            name=f"room {room.id} {mid}",
            on_closed=self._sender_closed,
        )
        old = state.hub.add(room.id, mid, sender)
        if old is not None:
            old.close("replaced")
        sender.start()
        state.hub.dispatch(room, joined.messages)
        state.worker.wake()
        try:
            await self._receive_loop(room, mid, sender)
        finally:
            state.hub.remove(room.id, mid, sender)
            out = state.manager.leave(room.id, mid, joined.session)
            if out:
                state.hub.dispatch(room, out)
            sender.stop()
            await sender.wait(timeout=5.0)

    def _sender_closed(self, sender: Sender) -> None:
        """The sender ended (too slow, replaced, shutting down, peer gone): stop receiving now."""
        if self._deadline is not None:
            self._deadline.reschedule(asyncio.get_running_loop().time())

    async def _receive_loop(self, room: Room, mid: str, sender: Sender) -> None:
        state = self.state
        idle = state.settings.idle_timeout_s
        max_bytes = LIMITS["max_message_bytes"]
        while True:
            if sender.state.value != "open":
                return
            try:
                async with asyncio.timeout(idle) as self._deadline:
                    msg = await self.ws.receive()
            except TimeoutError:
                if sender.state.value == "open":
                    log.info("room %s: %s idle for %.0f s: closing", room.id, mid, idle)
                    sender.close("idle_timeout")
                return
            finally:
                self._deadline = None
            if msg["type"] == "websocket.disconnect":
                return
            data = msg.get("bytes")
            try:
                if data is None:
                    out = self._refuse_text(room, mid)
                elif len(data) > max_bytes:
                    err = error_message("too_large", f"message of {len(data)} bytes exceeds {max_bytes}")
                    raise Disconnect("too_large", [Outgoing(err, to=mid)])
                else:
                    out = state.manager.receive(room.id, mid, data)
            except Disconnect as d:
                state.hub.dispatch(room, d.messages)
                log.info("room %s: closing %s: %s", room.id, mid, d.close)
                sender.close(d.close)
                return
            if out:
                state.hub.dispatch(room, out)
                self._log_refusals(room, mid, out)
                state.worker.wake()
            member = room.members.get(mid)
            if member is not None and member.acked_seq:
                sender.ack(member.acked_seq)

    def _refuse_text(self, room: Room, mid: str) -> list[Outgoing]:
        out = [Outgoing(error_message("malformed", "binary msgpack messages only"), to=mid)]
        member = room.members.get(mid)
        if member is not None and not member.limiter.strike():
            raise Disconnect("protocol_violation", out)
        return out

    @staticmethod
    def _log_refusals(room: Room, mid: str, out: list[Outgoing]) -> None:
        for o in out:
            if o.msg.get("t") == "error" and o.to == mid:
                field_ = o.msg.get("field")
                log.info(
                    "room %s: refused a message from %s: %s%s",
                    room.id,
                    mid,
                    o.msg["code"],
                    f" ({field_})" if field_ else "",
                )


async def websocket_room(ws: WebSocket) -> None:
    await Connection(_state(ws), ws, ws.path_params["room"]).run()


# --- app -----------------------------------------------------------------------------------------


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
        Route(f"/api/rooms/{room}/image.png", image_png),
        Route(f"/api/rooms/{room}/trajectory.gif", trajectory),
        Route(f"/api/rooms/{room}/latent.safetensors", latent_file),
        Route(f"/api/rooms/{room}/upload", upload, methods=["POST"]),
        Route(f"/api/rooms/{room}/upload.png", upload_png),
        Route("/healthz", healthz),
        Route("/api/info", info),
        WebSocketRoute(f"/ws/{room}", websocket_room),
        Mount("/static", StaticFiles(directory=settings.web_dir, check_dir=False), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(SecurityHeaders)
    return app


# --- serving -------------------------------------------------------------------------------------


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


def uvicorn_config(app: Starlette, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """uvicorn settings for livedrag: no per-message deflate, the inbound cap, redacted logs."""
    kw: dict[str, Any] = dict(
        host=settings.host,
        port=settings.port,
        ws_max_size=settings.ws_max_size,
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
