"""The HTTP handlers: the pages, room creation and deletion, the downloads, the upload, health and info.

Room creation is limited per client (its address; an IPv6 /64): a token bucket
(``rooms_per_minute``, burst twice that) and ``max_rooms_per_client`` live rooms it created (its
least recently used idle room is archived beyond; all in use: 429; in a cluster its live rooms on
every node count, in Redis: ``server/cluster/quota.py``), both answered with 429 and
``Retry-After``; at ``max_rooms`` live rooms the least recently used idle room is archived, and
only when every live room is in use does creation answer 503. A room handler opens an archived
room (history intact); a deleted room answers 410, an unknown one 404. ``DELETE /api/rooms/{room}``
with the edit capability deletes a room and closes its connections with 4014 ``room_closed``.

Downloads are authorised by a capability: either of the room's tokens (edit or view), as the
query parameter ``cap=`` (what links in the page use) or the header ``X-Livedrag-Cap``. Uploads
need the edit capability (a view one gets 403). An upload is refused, with a JSON ``{"error"}`` and
nothing changed, when the room is busy (409), over ``max_upload_bytes`` (413, checked while the
body streams in), not a PNG/JPEG/WebP picture (415), bad (400: truncated, too many pixels, a
decompression bomb... as ``load_upload`` says) or over ``uploads_per_minute`` for the room (429);
the checks before the engine's are in ``uploads.py``. Room ids are short and appear in URLs and
logs, so they are not secrets; query strings are never logged (``serve.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response

from server.core.protocol import PROTOCOL_VERSION, ProtocolError
from server.core.room import Room
from server.core.state import ImageInfo
from server.edge.appstate import app_state, client_ip, client_key
from server.edge.model_routes import listed_models, unknown_model
from server.edge.uploads import UploadRefused, picture_bytes, read_limited, sniff, upload_options
from server.storage.manager import ClientRoomsFull, RoomGone, RoomsFull
from server.storage.store import Store, StoreError
from server.worker.media import trajectory_gif
from server.worker.state import EngineError

log = logging.getLogger(__name__)

MAX_BODY = 4096  # POST /api/rooms body
CAP_HEADER = "x-livedrag-cap"


# --- pages ---------------------------------------------------------------------------------------


def _page(request: Request, name: str) -> Response:
    path = app_state(request).settings.web_dir / name
    if not path.is_file():
        return PlainTextResponse(f"web client not installed ({name} missing)", status_code=404)
    return FileResponse(path, headers={"cache-control": "no-cache"})


async def index(request: Request) -> Response:
    return _page(request, "index.html")


async def room_page(request: Request) -> Response:
    return _page(request, "room.html")


# --- API -----------------------------------------------------------------------------------------


def _error(status: int, message: str, retry_after: float | None = None) -> JSONResponse:
    headers = {"cache-control": "no-store"}
    if retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(retry_after)))
    return JSONResponse({"error": message}, status_code=status, headers=headers)


FULL_RETRY_S = 60  # Retry-After when the server's (or a client's) live rooms are all in use


def _gone(e: RoomGone) -> Response:
    if e.deleted:
        return _error(410, "this room was deleted (by an editor, or after a long time unused)")
    return _error(404, "no such room")


async def create_room(request: Request) -> Response:
    state = app_state(request)
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
        seed, truncation, model = _parse_create(body)
    except ValueError as e:
        return _error(400, str(e))
    model = model or state.models.default
    spec = state.models.specs.get(model)
    res = spec.resolution if spec is not None else None
    if res is None and state.cluster is not None:  # another node of the cluster may serve it
        res = state.cluster.model_resolution(model)
    if res is None:
        return _error(400, unknown_model(state, model))
    client = client_key(client_ip(request))
    wait = state.allow_create(client)
    if wait:
        return _error(429, f"too many rooms created from this address; try again in {wait:.0f} s", wait)
    image = ImageInfo(model, res, res, seed=seed, truncation=truncation)
    cap = state.manager.lifecycle.max_rooms_per_client
    slot = ""  # a cluster counts the client's live rooms in Redis (server.cluster.quota)
    if state.cluster is not None and cap:
        slot = await state.cluster.reserve_room(client, cap)
        if slot is None:
            return _client_full(cap)
    created = None
    try:
        created = state.manager.create(image, client=client, live=state.cluster is None)
    except ClientRoomsFull:
        return _client_full(cap)
    except RoomsFull:
        return _error(503, "every room this server can hold is in use; try again later", FULL_RETRY_S)
    except StoreError as e:
        log.error("creating a room failed: %s", e)
        return _error(503, "the server could not save the room")
    finally:
        if slot:
            await state.cluster.confirm_room(client, slot, created.room_id if created else None)
    if state.cluster is not None:
        state.cluster.prepare(created.room_id)  # the node that should take it loads it now
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
            "model": model,
        },
        status_code=201,
        headers={"cache-control": "no-store"},
    )


def _client_full(cap: int) -> Response:
    return _error(
        429, f"this address's {cap} newest rooms are all in use; leave one, or try again later", FULL_RETRY_S
    )


def _parse_create(body: bytes) -> tuple[int, float, str | None]:
    data: Any = {}
    if body.strip():
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise ValueError("body must be a JSON object") from None
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    unknown = sorted(set(data) - {"seed", "truncation", "model"})
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
    model = data.get("model")
    if model is not None and (type(model) is not str or not 0 < len(model) <= 64):
        raise ValueError("model must be a model's name (GET /api/models lists them)")
    return seed, float(truncation), model


def _role(request: Request, edit: str | None = None) -> str | Response:
    """The role the request's capability gives in the room named in the path (``edit``: what
    needs the edit capability, for the 403 message); else the 404/410/403/503 answer. The room
    is not loaded."""
    room_id = request.path_params["room"]
    cap = request.query_params.get("cap") or request.headers.get(CAP_HEADER) or ""
    try:
        role = app_state(request).manager.role(room_id, cap)
    except RoomGone as e:
        return _gone(e)
    except StoreError as e:
        log.error("room %s: looking it up failed: %s", room_id, e)
        return _error(503, "the server could not read its room store")
    if role is None:
        return _error(403, "a capability of this room is needed (cap= or X-Livedrag-Cap)")
    if edit and role != "editor":
        return _error(403, f"{edit} needs the room's edit link; a view-only link may only watch")
    return role


async def _elsewhere(request: Request) -> Response | None:
    """In a cluster, the owner's answer when another node owns the room (None: answer here)."""
    state = app_state(request)
    if state.cluster is None:
        return None
    from server.edge.cluster import forward_if_elsewhere

    return await forward_if_elsewhere(request, state)


def _authorised_room(request: Request, edit: bool = False) -> Room | Response:
    """The room named in the path, live (an archived one is opened), when the request carries
    one of its capabilities (``edit``: its edit capability); else the error answer."""
    role = _role(request, "uploading" if edit else None)
    if isinstance(role, Response):
        return role
    state = app_state(request)
    room_id = request.path_params["room"]
    try:
        room = state.manager.open(room_id)
    except RoomGone as e:
        return _gone(e)
    except RoomsFull:
        return _error(503, "every room this server can hold is in use; try again later", FULL_RETRY_S)
    except StoreError as e:
        log.error("room %s: opening it failed: %s", room_id, e)
        return _error(503, "the server could not read its room store")
    state.manager.touch(room_id)
    return room


async def delete_room(request: Request) -> Response:
    """DELETE /api/rooms/{room} with the edit capability: the room goes, with its history; its
    connections are closed with 4014 room_closed and its links answer "deleted" from then on."""
    state = app_state(request)
    if not state.origin_allowed(request.headers.get("origin"), request.headers.get("host")):
        return _error(403, "origin not allowed")
    role = _role(request, "deleting a room")
    if isinstance(role, Response):
        return role
    if (answer := await _elsewhere(request)) is not None:
        return answer
    room_id = request.path_params["room"]
    try:
        room = state.manager.delete(room_id, "editor")
    except StoreError as e:
        log.error("room %s: deleting it failed: %s", room_id, e)
        return _error(503, "the server could not delete the room; try again")
    if room is not None:
        senders = state.hub.senders(room_id)
        for sender in senders:
            sender.close("room_closed")
        log.info("room %s: deleted by an editor; closed %d connection(s)", room_id, len(senders))
    if state.cluster is not None:
        state.cluster.deleted(room_id)  # members on other nodes are closed too; the lease goes
    state.upload_buckets.pop(room_id, None)
    state.worker.forget_gone()
    return JSONResponse({"room": room_id, "deleted": True}, headers={"cache-control": "no-store"})


def _download(data: bytes, media_type: str, filename: str) -> Response:
    return Response(
        data,
        media_type=media_type,
        headers={"cache-control": "no-store", "content-disposition": f'inline; filename="{filename}"'},
    )


async def image_png(request: Request) -> Response:
    if (answer := await _elsewhere(request)) is not None:
        return answer
    room = _authorised_room(request)
    if isinstance(room, Response):
        return room
    try:
        data = await app_state(request).worker.image_png(room.image, room.id)
    except Exception as e:
        return _engine_error("image", room, e)
    return _download(data, "image/png", f"livedrag-{room.id}.png")


async def latent_file(request: Request) -> Response:
    if (answer := await _elsewhere(request)) is not None:
        return answer
    room = _authorised_room(request)
    if isinstance(room, Response):
        return room
    try:
        data = await app_state(request).worker.latent_bytes(room.image)
    except Exception as e:
        return _engine_error("latent", room, e)
    return _download(data, "application/octet-stream", f"livedrag-{room.id}.safetensors")


async def trajectory(request: Request) -> Response:
    if (answer := await _elsewhere(request)) is not None:
        return answer
    room = _authorised_room(request)
    if isinstance(room, Response):
        return room
    items = await app_state(request).worker.trajectory(room.id)
    if not items:
        return _error(404, "no drag has run in this room since it was last opened")
    data = await asyncio.to_thread(trajectory_gif, items)
    return _download(data, "image/gif", f"livedrag-{room.id}-drag.gif")


async def upload(request: Request) -> Response:
    """POST a picture: validated off the event loop, stored by content key, then projected."""
    state = app_state(request)
    if (answer := await _elsewhere(request)) is not None:
        return answer
    room = _authorised_room(request, edit=True)
    if isinstance(room, Response):
        return room
    if state.closing:
        return _error(503, "server is shutting down")
    settings, res = state.settings, room.image.w
    try:
        model = await state.models.wait_loaded(room.image.model)
    except EngineError as e:
        return _error(503, str(e))
    try:
        method, steps = upload_options(
            request.query_params,
            settings.project_steps,
            room.limits.max_project_steps,
            model.projector.methods,
        )
        by = request.query_params.get("member")  # the editor sending it: theirs to undo
        if by is not None and not (by in room.members and room.members[by].is_editor):
            raise UploadRefused(400, "member must be the id of an editor connected to this room")
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
        out = state.manager.start_upload(room.id, info, method, steps, by=by)
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
    if (answer := await _elsewhere(request)) is not None:
        return answer
    room = _authorised_room(request)
    if isinstance(room, Response):
        return room
    if room.upload is None:
        return _error(404, "no picture has been uploaded to this room")
    try:
        data = await asyncio.to_thread(app_state(request).store.get_upload, room.upload.key)
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
    state = app_state(request)
    rooms = state.manager.rooms.values()
    return JSONResponse(
        {
            "ok": not state.closing,
            "warm": state.worker.warm,
            "model": state.model,
            "resolution": state.G.img_resolution,
            "device": str(state.device),
            "rooms": len(state.manager.rooms),
            "rooms_stored": _stored_rooms(state.store),
            "running": sum(r.status.value != "idle" for r in rooms),
            "connections": state.connections,
            "uptime_s": round(time.time() - state.started, 1),
            **({"cluster": state.cluster.summary()} if state.cluster is not None else {}),
            "models": {
                "offered": len(state.models.specs),
                "loaded": [n for n in state.models.names() if state.models.loaded(n) is not None],
                "memory_mb": round(state.models.used_bytes / 2**20, 1),
            },
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


def _stored_rooms(store: Store) -> int | None:
    try:
        return store.count_rooms()
    except StoreError:
        return None


async def info(request: Request) -> Response:
    state = app_state(request)
    return JSONResponse(
        {
            "model": state.model,
            "resolution": state.G.img_resolution,
            "modes": state.worker.available_modes,
            "unavailable_modes": state.unavailable,
            "projection": state.worker.projector.methods,
            "project_steps": state.settings.project_steps,
            "max_upload_bytes": state.settings.max_upload_bytes,
            "protocol_version": PROTOCOL_VERSION,
            "max_fps": state.settings.max_fps,
            "default_model": state.models.default,
            "models": listed_models(state),
        },
        headers={"cache-control": "no-cache"},
    )
