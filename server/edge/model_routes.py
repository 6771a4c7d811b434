"""The models' HTTP API: ``GET /api/models`` (every model a room may be created on, with its card
and, once loaded, its modes) and ``GET /api/models/{name}/samples.jpg`` (a 2x2 grid of sample
images for the start page's picker; the first request loads the model, the grid is kept)."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from server.edge.appstate import app_state
from server.worker.state import EngineError

log = logging.getLogger(__name__)


async def models_list(request: Request) -> Response:
    state = app_state(request)
    return JSONResponse(
        {"default": state.models.default, "models": state.models.describe()},
        headers={"cache-control": "no-cache"},
    )


async def model_samples(request: Request) -> Response:
    state = app_state(request)
    name = request.path_params["name"]
    if name not in state.models.specs:
        return PlainTextResponse(state.models.unknown(name), status_code=404)
    data = state.samples.get(name)
    if data is None:
        try:
            data = await state.worker.samples_jpeg(name)
        except EngineError as e:
            return PlainTextResponse(str(e), status_code=503)
        state.samples[name] = data
    return Response(data, media_type="image/jpeg", headers={"cache-control": "public, max-age=3600"})
