"""The models' HTTP API: ``GET /api/models`` (every model a room may be created on, with its card
and, once loaded, its modes) and ``GET /api/models/{name}/samples.jpg`` (a 2x2 grid of sample
images for the start page's picker; the first request loads the model, the grid is kept).

In a cluster both cover every live node: the list is the union of the models the nodes announce
(``loaded``: loaded on some node; ``server.cluster.catalog``), and the samples of a model only
other nodes serve are drawn by one of them (the request is forwarded).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from server.edge.appstate import AppState, app_state
from server.worker.state import EngineError

log = logging.getLogger(__name__)


def listed_models(state: AppState) -> list[dict[str, Any]]:
    """The model cards ``GET /api/models`` and ``/api/info`` list (a cluster: every live node's)."""
    models = state.models.describe()
    if state.cluster is not None:
        models = state.cluster.models(models, state.models.default)
    return models


def unknown_model(state: AppState, name: str) -> str:
    """Why ``name`` is refused, naming the models offered (a cluster: by some live node)."""
    if state.cluster is None:
        return state.models.unknown(name)
    offered = ", ".join(m["name"] for m in listed_models(state))
    return f"no node of this cluster has a model {name!r} (they offer: {offered})"


async def models_list(request: Request) -> Response:
    state = app_state(request)
    return JSONResponse(
        {"default": state.models.default, "models": listed_models(state)},
        headers={"cache-control": "no-cache"},
    )


async def model_samples(request: Request) -> Response:
    state = app_state(request)
    name = request.path_params["name"]
    if name not in state.models.specs:
        if state.cluster is not None:
            from server.edge.cluster import forward_model_samples

            answer = await forward_model_samples(request, state, name)
            if answer is not None:
                return answer
        return PlainTextResponse(unknown_model(state, name), status_code=404)
    data = state.samples.get(name)
    if data is None:
        try:
            data = await state.worker.samples_jpeg(name)
        except EngineError as e:
            return PlainTextResponse(str(e), status_code=503)
        state.samples[name] = data
    return Response(data, media_type="image/jpeg", headers={"cache-control": "public, max-age=3600"})
