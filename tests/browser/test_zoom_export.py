"""The image's display size and its PNG export in headless Chromium: at most 4x the model's
resolution by default, a zoom control and shortcuts that change it (remembered by this browser
alone), clicks that land on the right image pixel at every zoom, scrolled or not, and PNG downloads
at the native size and upscaled, named by their size."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

from tests.browser.conftest import js, wait_joined
from tests.browser.live import edit_path, view_path

RES = 32  # the test server's model (tests/browser/conftest.py)


def shown_width(page) -> float:
    box = page.locator("#image-canvas").bounding_box()
    assert box is not None
    return box["width"]


def text_of(page, selector: str) -> str:
    return " ".join((page.locator(selector).text_content() or "").split())


def add_pair_at(page, handle: tuple[float, float], target: tuple[float, float]) -> list[list[float]]:
    """Press at the viewport position of image pixel `handle`, release at `target` (both as image
    coordinates, mapped through the canvas's box); returns the pair the room stored."""

    def at(p: tuple[float, float]) -> tuple[float, float]:
        box = page.locator("#overlay-canvas").bounding_box()
        assert box is not None
        return box["x"] + (p[0] + 0.5) * box["width"] / RES, box["y"] + (p[1] + 0.5) * box["height"] / RES

    n = js(page, "livedrag.model.state.pairs.length")
    page.mouse.move(*at(handle))
    page.mouse.down()
    page.mouse.move(*at(target), steps=5)
    page.mouse.up()
    page.wait_for_function(f"livedrag.model.state.pairs.length === {n + 1}")
    pair = js(page, "livedrag.model.state.pairs.at(-1)")
    return [pair["handle"], pair["target"]]


def test_default_size_is_at_most_4x_and_zoom_changes_it_with_clicks_on_target(server, open_page):
    """Fit shows the 32 px image at 128 CSS px (4x) in a large window; +, the menu, 1 and 0 change
    the size; pairs placed at every zoom land on the image pixels under the pointer, also when the
    image is larger than the area and scrolled; the zoom is remembered across reloads."""
    room = server.create_room(seed=1)
    page = open_page(server.url + edit_path(room), name="Ada", width=1280, height=800)
    page.wait_for_selector("#placeholder", state="hidden")
    assert shown_width(page) == 4 * RES  # not the ~600 px the area would allow
    assert page.locator("#zoom-level").input_value() == "fit"
    assert page.locator("#zoom-level option:checked").inner_text() == "Fit (400%)"
    assert not js(page, "document.getElementById('canvas-wrap').classList.contains('is-pixelated')")
    assert add_pair_at(page, (5, 6), (20, 9)) == [[5, 6], [20, 9]]

    page.keyboard.press("+")
    assert shown_width(page) == 8 * RES
    assert page.locator("#zoom-level").input_value() == "8"
    assert js(page, "localStorage.getItem('livedrag.zoom')") == "8"
    assert js(page, "document.getElementById('canvas-wrap').classList.contains('is-pixelated')")
    assert add_pair_at(page, (3, 28), (12, 17)) == [[3, 28], [12, 17]]
    page.keyboard.press("1")
    assert shown_width(page) == RES
    page.keyboard.press("-")  # 1x is the smallest step for a small image
    assert shown_width(page) == RES
    assert page.locator("#zoom-out").is_disabled()
    page.click("#zoom-in")  # the mouse leaves no focus on it: Space stays start/stop
    assert shown_width(page) == 2 * RES
    assert js(page, "document.activeElement.id") != "zoom-in"
    page.keyboard.press("0")
    assert shown_width(page) == 4 * RES
    assert js(page, "livedrag.model.state.pairs.length") == 2  # zooming sent no edits

    # keys typed into a field do not zoom
    page.fill("#seed", "")
    page.locator("#seed").press("1")
    page.locator("#seed").press("-")
    assert shown_width(page) == 4 * RES

    # the menu: 16x is 512 px, larger than this short window's area, which scrolls
    page.set_viewport_size({"width": 1280, "height": 560})
    page.select_option("#zoom-level", "16")
    assert shown_width(page) == 16 * RES
    scroll = js(
        page,
        "(() => { const s = document.getElementById('canvas-scroll');"
        " return [s.scrollHeight > s.clientHeight, s.clientHeight]; })()",
    )
    assert scroll[0], "the zoomed image should overflow the area"
    page.evaluate("document.getElementById('canvas-scroll').scrollTop = 1e6")  # to the bottom
    area = page.locator("#canvas-scroll").bounding_box()
    image = page.locator("#image-canvas").bounding_box()
    assert area is not None and image is not None
    assert image["y"] < area["y"]  # the top of the image is scrolled out of sight
    # pixels near the bottom, in view after scrolling
    assert add_pair_at(page, (4, 30), (26, 29)) == [[4, 30], [26, 29]]
    assert js(page, "livedrag.model.state.pairs.length") == 3

    # remembered by this browser, not shared: a reload keeps 16x, another person still fits
    page.reload()
    wait_joined(page)
    page.wait_for_selector("#placeholder", state="hidden")
    assert page.locator("#zoom-level").input_value() == "16"
    assert shown_width(page) == 16 * RES
    viewer = open_page(server.url + view_path(room), name="Watcher", width=1280, height=800)
    assert shown_width(viewer) == 4 * RES
    assert viewer.locator("#zoom").is_visible()  # spectators zoom too
    viewer.keyboard.press("+")
    assert shown_width(viewer) == 8 * RES
    assert shown_width(page) == 16 * RES


def test_default_size_fills_a_small_window(server, open_page):
    """In a window too small for 4x the image is as large as the area allows, less its padding."""
    room = server.create_room(seed=2)
    page = open_page(server.url + edit_path(room), name="Ada", width=360, height=280)
    area = page.locator("#canvas-scroll").bounding_box()
    assert area is not None
    pad = 6  # the stage's padding below 520 px (web/js/stage.js)
    room_for = min(area["width"], area["height"]) - 2 * pad
    assert room_for < 4 * RES, area  # the window is small enough to matter
    assert shown_width(page) == int(room_for)
    label = page.locator("#zoom-level option:checked").inner_text()
    assert label.startswith("Fit (") and abs(int(label[5:-2]) - 100 * room_for / RES) <= 1, label


def test_png_downloads_native_and_upscaled_named_by_size(server, open_page):
    """PNG saves the server's lossless image at the model's resolution; the upscaled button saves
    it 16x larger (512 px for a 32 px model), smooth; the file names say the sizes. The latent
    link still works."""
    room = server.create_room(seed=3)
    page = open_page(server.url + edit_path(room), name="Ada")
    page.wait_for_selector("#placeholder", state="hidden")
    assert text_of(page, "#dl-png") == f"PNG {RES}×{RES}"
    assert text_of(page, "#dl-png-up") == "PNG 16× 512×512"

    with page.expect_download() as d:
        page.click("#dl-png")
    native = d.value
    assert native.suggested_filename.endswith(f"-{RES}x{RES}.png"), native.suggested_filename
    assert native.suggested_filename.startswith(room["room"])
    img = Image.open(BytesIO(Path(native.path()).read_bytes()))
    assert img.format == "PNG" and img.size == (RES, RES)

    with page.expect_download() as d:
        page.click("#dl-png-up")
    up = d.value
    assert up.suggested_filename.endswith("-512x512.png"), up.suggested_filename
    big = Image.open(BytesIO(Path(up.path()).read_bytes()))
    assert big.format == "PNG" and big.size == (512, 512)
    # the same picture: shrunk back, it matches the native one closely
    small = np.asarray(big.convert("RGB").resize((RES, RES), Image.Resampling.BOX), dtype=np.float64)
    assert np.abs(small - np.asarray(img.convert("RGB"), dtype=np.float64)).mean() < 12

    href = page.locator("#dl-latent").get_attribute("href")
    status = page.evaluate("async (u) => (await fetch(u)).status", href)
    assert status == 200
