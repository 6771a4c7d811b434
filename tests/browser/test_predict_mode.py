"""Predict mode in headless Chromium: a room switched to the learned predictor runs a drag until a
rule of server/engine/stop_rules.py ends it; here point tracking loses the handle, and both the
editor and a spectator see the handle marked and are told why."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.conftest import canvas_point, image_checksum, js, wait_joined
from tests.browser.live import LiveServer, edit_path, make_checkpoint, make_predictor, view_path


@pytest.fixture(scope="module")
def predict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server whose predict mode runs a small random predictor that changes the picture, with a
    lost-handle rule so strict that any change of the handle's feature counts (lost at step 2)."""
    d = tmp_path_factory.mktemp("predict")
    ckpt = make_checkpoint(d)
    predictor = make_predictor(ckpt, d, moving=True, lost_ratio=1e-6)
    srv = LiveServer(ckpt, d / "data", predictor=predictor)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_predict_drag_that_loses_its_handle_marks_it(predict_server, open_page):
    srv = predict_server
    room = srv.create_room(seed=2)
    ada = open_page(srv.url + edit_path(room), name="Ada")
    watcher = open_page(srv.url + view_path(room), name="Watcher")
    wait_joined(watcher)
    ada.wait_for_function("livedrag.app.modes && livedrag.app.modes.includes('predict')")
    ada.click("#mode button[data-mode=predict]")
    watcher.wait_for_function("livedrag.model.state.params.mode === 'predict'")

    # a 10 px drag
    ada.mouse.move(*canvas_point(ada, 0.3, 0.3))
    ada.mouse.down()
    ada.mouse.move(*canvas_point(ada, 0.6, 0.4), steps=6)
    ada.mouse.up()
    watcher.wait_for_function("livedrag.model.state.pairs.length === 1")
    before = image_checksum(watcher)

    ada.click("#run")
    for p in (ada, watcher):
        p.wait_for_function(
            "livedrag.model.state.status === 'idle' && livedrag.model.lastEnd"
            " && livedrag.model.lastEnd.reason === 'lost'",
            timeout=40_000,
        )
    end = js(watcher, "livedrag.model.lastEnd")
    assert end["mode"] == "predict" and end["step"] == 2 and end["lost"] == 1
    for p in (ada, watcher):
        assert p.locator("#drag-result").inner_text().startswith("Stopped after 2 steps: a handle lost track")
        assert js(p, "livedrag.model.display().pairs.map((q) => !!q.lost)") == [True]
    watcher.wait_for_function("livedrag.model.state.history.size === 2")
    watcher.wait_for_function("livedrag.app.pipeline.lastSeq >= 1")
    assert image_checksum(watcher) != before  # the moving predictor changed the picture
