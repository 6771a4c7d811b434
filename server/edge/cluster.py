"""The edge's side of a cluster (``livedrag serve --redis URL --database URL``): imported only then.

- :func:`start_cluster` joins the node to the cluster with :class:`EdgeNode`, the small
  interface through which the cluster reaches this node (its fan-out, its worker, what it serves);
  the fan-out's ``Hub.remote`` hook then publishes what members on other nodes should get.
- :func:`place_for_join`: a websocket hello's room, checked (capability) and placed: here, or on
  the node that owns it (the connection is then relayed: ``websocket.Connection._relay_session``).
- :func:`forward_if_elsewhere`: an HTTP request about a room another node owns (downloads,
  uploads, deletion) is forwarded to that node and its answer returned as it is;
  :func:`forward_model_samples`: a model's sample grid that only another node can draw, likewise.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from server.cluster.config import ClusterConfig
from server.cluster.node import ClusterNode, Placement
from server.cluster.proxy import FORWARDED, forward
from server.core.members import JoinRefused
from server.core.outgoing import Outgoing
from server.core.room import Room
from server.storage.manager import RoomGone
from server.storage.store import StoreError

if TYPE_CHECKING:
    from server.edge.appstate import AppState

log = logging.getLogger(__name__)
CAP_HEADER = "x-livedrag-cap"


class EdgeNode:
    """The cluster's view of this node (``server.cluster.owner.LocalNode``)."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    def dispatch(self, room: Room, outs: list[Outgoing]) -> None:
        self.state.hub.dispatch(room, outs)

    def close_member(self, room_id: str, member_id: str, close: str) -> None:
        sender = self.state.hub.get(room_id, member_id)
        if sender is not None:
            sender.close(close)

    def close_room(self, room_id: str, close: str) -> None:
        for sender in self.state.hub.senders(room_id):
            if not sender.name.startswith("relay "):
                sender.close(close)

    def wake(self) -> None:
        self.state.worker.wake()

    def forget_gone(self) -> None:
        self.state.worker.forget_gone()

    def info(self) -> dict[str, Any]:
        pool = self.state.models
        live = len(self.state.manager.rooms)
        return {
            "device": str(self.state.device),
            "models": sorted(pool.specs),
            "resolutions": {name: spec.resolution for name, spec in pool.specs.items()},
            "loaded": sorted(n for n in pool.specs if pool.loaded(n) is not None),
            "cards": pool.describe(),
            "free": max(0, self.state.manager.limits.max_rooms - live),
            "connections": self.state.connections,
        }


async def start_cluster(state: AppState) -> ClusterNode:
    """Join the cluster named in the settings (Redis must answer: else the server does not start)."""
    s = state.settings
    assert s.redis_url is not None and s.database_url is not None
    advertise = s.advertise_url or f"http://{s.host}:{s.port}"
    kw: dict[str, Any] = {"node_id": s.node_id} if s.node_id else {}
    cfg = ClusterConfig(s.redis_url, s.database_url, advertise_url=advertise, **kw)
    node = ClusterNode(cfg, state.manager, state.store, EdgeNode(state))  # type: ignore[arg-type]
    await node.start()
    state.hub.remote = node
    return node


async def place_for_join(state: AppState, room_id: str, cap: str) -> Placement:
    """Where a hello's room lives, after its capability was checked. Raises JoinRefused with the
    close code (room_not_found, room_closed, bad_capability, internal_error, server_full)."""
    try:
        if state.manager.role(room_id, cap) is None:
            raise JoinRefused("bad_capability")
        return await state.cluster.place(room_id)
    except RoomGone as e:
        raise JoinRefused("room_closed" if e.deleted else "room_not_found") from None
    except StoreError as e:
        log.error("room %s: %s", room_id, e)
        raise JoinRefused("internal_error", "the room store failed") from None


async def forward_if_elsewhere(request: Request, state: AppState) -> Response | None:
    """The answer of the room's owner when another node owns it; None: answer here (the room is
    this node's now, or the request's capability or room is wrong: the handler says so)."""
    room_id = request.path_params["room"]
    cap = request.query_params.get("cap") or request.headers.get(CAP_HEADER) or ""
    try:
        if state.manager.role(room_id, cap) is None:
            return None
        where = await state.cluster.place(room_id)
    except (RoomGone, StoreError):
        return None
    except JoinRefused as e:
        return JSONResponse({"error": f"no node can hold this room now ({e})"}, status_code=503)
    if where.local:
        return None
    if request.headers.get(FORWARDED) or not where.url:
        return JSONResponse({"error": "the room is moving between nodes; try again"}, status_code=503)
    limit = state.settings.max_upload_bytes + 2**16  # the upload's own checks run on the owner
    too_large = JSONResponse({"error": f"body larger than {state.settings.max_upload_bytes} bytes"}, 413)
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        return too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return too_large
    status, headers, content = await forward(
        where.url, request.method, request.url, request.headers, bytes(body)
    )
    return Response(content, status_code=status, headers=headers)


async def forward_model_samples(request: Request, state: AppState, model: str) -> Response | None:
    """``GET /api/models/{model}/samples.jpg`` for a model this node does not serve: the answer of
    a live node that does (None: no node serves it, or the request was forwarded already)."""
    url = state.cluster.model_url(model)
    if not url or request.headers.get(FORWARDED):
        return None
    status, headers, content = await forward(url, "GET", request.url, request.headers, b"")
    return Response(content, status_code=status, headers=headers)
