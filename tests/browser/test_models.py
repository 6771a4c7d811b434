"""The start page's model picker in headless Chromium: each model's card with its sample images;
a room created on a library model runs on it (frame size, model name, its own modes)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from server.models import ModelLibrary
from tests.browser.conftest import js, wait_joined
from tests.browser.live import LiveServer, make_checkpoint
from tests.models.helpers import write_generator, write_predictor


@pytest.fixture(scope="module")
def models_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The tiny 32 px default (no predictor) and a 16 px library model with a predictor."""
    d = tmp_path_factory.mktemp("models")
    ckpt = make_checkpoint(d)
    lib = d / "library"
    lib.mkdir()
    src, G = write_generator(d / "g16.safetensors", seed=5, res=16)
    ModelLibrary(lib).add(
        src,
        name="cats16",
        licence="CC0-1.0",
        source="test cats",
        predictor=write_predictor(d / "p16.safetensors", G),
    )
    srv = LiveServer(ckpt, d / "data", extra_args=("--models", str(lib), "--lost-ratio", "0"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_pick_a_model_and_edit_on_it(models_server, open_page):
    page = open_page(models_server.url + "/", name="Ada", join=False)
    page.wait_for_selector("#model-picker:not([hidden])")
    names = page.locator(".model-option .model-name").all_inner_texts()
    assert names[0] == "tiny-32-skip (default)" and "cats16" in names and len(names) == 3
    assert page.locator("input[name=model]:checked").get_attribute("value") == "tiny-32-skip"
    cats = page.locator(".model-option", has_text="cats16")
    assert "licence: CC0-1.0" in cats.inner_text() and "16 px" in cats.inner_text()
    page.wait_for_function(
        "[...document.querySelectorAll('.model-option img')].filter((i) => i.complete && i.naturalWidth > 0)"
        ".length >= 2",
        timeout=30_000,
    )
    cats.click()
    page.click("#create")
    page.wait_for_url("**/r/**")
    wait_joined(page)
    page.wait_for_function("livedrag.model.state && livedrag.model.state.image.w === 16")
    assert page.locator("#image-model").inner_text() == "cats16"
    page.wait_for_function("livedrag.app.modes && livedrag.app.modes.includes('predict')", timeout=30_000)
    assert not page.locator("#mode button[data-mode=predict]").is_disabled()


def test_the_default_models_room_offers_only_what_it_has(models_server, open_page):
    room = models_server.create_room(seed=3)
    page = open_page(models_server.url + f"/r/{room['room']}#edit={room['edit_token']}", name="Ada")
    page.wait_for_function("livedrag.app.modes !== null")
    assert js(page, "livedrag.app.modes") == ["optimize"]
    assert page.locator("#mode button[data-mode=predict]").is_disabled()
