"""A masked drag in the browser on the shipped model: paint a flexible band over the mouth, drag
its corner, press Start with the default settings; the drag arrives and the image outside the
band barely changes (the engine test measures the same rule: tests/engine/test_masks.py)."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from server.engine.checkpoint import default_checkpoint_path, load_generator
from server.engine.generator import to_uint8
from server.synthfaces.detector import load_detector
from server.synthfaces.landmarks import LANDMARK_NAMES
from tests.browser.conftest import canvas_point, js
from tests.browser.live import LiveServer, edit_path

SEED = 100004  # a face whose mouth-corner drag arrives (tests/engine/test_masks.py)


@pytest.fixture(scope="module")
def shipped_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    d = tmp_path_factory.mktemp("masks")
    srv = LiveServer(default_checkpoint_path(), d / "data", max_fps=60)
    srv.start()
    yield srv
    srv.stop()


def _committed_png(page) -> np.ndarray:
    """The room's committed image, fetched like the page's PNG download."""
    b64 = page.evaluate(
        """async () => { const r = await fetch(document.querySelector('#dl-png').href);
        const b = new Uint8Array(await r.arrayBuffer()); let s = '';
        for (const x of b) s += String.fromCharCode(x); return btoa(s); }"""
    )
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")).astype(np.float64)


def _frac(px: float, res: int) -> float:
    return (px + 0.5) / res  # image pixel centre -> fraction of the canvas


def test_masked_mouth_drag_arrives_and_keeps_the_rest(shipped_server, open_page):
    """Default lambda and tolerance: the drag ends reached, and outside the painted band the
    committed image changes by under 4 grey levels on average (unmasked, such a drag changes it
    by about 10 on this model)."""
    G = load_generator()
    res = G.img_resolution
    room = shipped_server.create_room(seed=SEED)
    page = open_page(shipped_server.url + edit_path(room), name="Ada")
    page.wait_for_selector("#placeholder", state="hidden")
    before = _committed_png(page)
    with torch.no_grad():
        img = to_uint8(
            G.synthesize(G.ws_from_seed(SEED, js(page, "livedrag.model.state.image.truncation")))[0]
        )
    hx, hy = load_detector().detect(img)[0, LANDMARK_NAMES.index("mouth_right")].tolist()
    tx, ty = hx + 4 * res / 64, hy - 3 * res / 64

    page.keyboard.press("f")  # the flexible brush: two strokes across the image over the mouth
    for dy in (-3 * res / 64, 3 * res / 64):
        page.mouse.move(*canvas_point(page, 0.02, _frac(hy + dy, res)))
        page.mouse.down()
        page.mouse.move(*canvas_point(page, 0.98, _frac(hy + dy, res)), steps=16)
        page.mouse.up()
    page.wait_for_function("livedrag.model.state.mask.cells.some(v => v === 1)")
    page.keyboard.press("p")  # back to points: press on the handle, release on the target
    page.mouse.move(*canvas_point(page, _frac(hx, res), _frac(hy, res)))
    page.mouse.down()
    page.mouse.move(*canvas_point(page, _frac(tx, res), _frac(ty, res)), steps=6)
    page.mouse.up()
    page.wait_for_function("livedrag.model.state.pairs.length === 1")
    assert js(page, "livedrag.model.state.params.lambda") == 20  # the defaults, untouched

    page.keyboard.press("Space")
    page.wait_for_function(
        "livedrag.model.lastEnd !== null && livedrag.model.state.status === 'idle'", timeout=90_000
    )
    end = js(page, "livedrag.model.lastEnd")
    assert end["reason"] == "reached", end
    mw, mh = js(page, "livedrag.model.state.mask.w"), js(page, "livedrag.model.state.mask.h")
    cells = np.array(js(page, "Array.from(livedrag.model.state.mask.cells)")).reshape(mh, mw)
    cells = cells.repeat(res // mh, axis=0).repeat(res // mw, axis=1)  # mask cells -> image pixels
    after = _committed_png(page)
    change = np.abs(after - before).mean(-1)
    assert change[cells == 1].mean() > change[cells != 1].mean()
    assert change[cells != 1].mean() < 4.0, change[cells != 1].mean()
