"""Per-person undo in two browsers: each editor's Z takes back their own last action, never the
other's drag; a drag someone dragged on top of is refused with a clear message; the shared image
history stays the same in both tabs, and after an undo no result text or step count is left."""

from __future__ import annotations

from playwright.sync_api import Page

from tests.browser.conftest import canvas_point, js
from tests.browser.live import edit_path

HISTORY = "JSON.stringify(livedrag.model.state.history)"


def press_and_release(page: Page, a: tuple[float, float], b: tuple[float, float]) -> None:
    page.mouse.move(*canvas_point(page, *a))
    page.mouse.down()
    page.mouse.move(*canvas_point(page, *b), steps=5)
    page.mouse.up()


def run_drag(page: Page, others: list[Page], size: int) -> None:
    """Start a drag with the Start button and wait until every tab has its commit."""
    page.click("#run")
    for p in (page, *others):
        p.wait_for_function(
            f"livedrag.model.state.status === 'idle' && livedrag.model.state.history.size === {size}"
            " && livedrag.model.lastEnd !== null",
            timeout=40_000,
        )


def same_history(*pages: Page) -> str:
    h = js(pages[0], HISTORY)
    for p in pages[1:]:
        p.wait_for_function(f"{HISTORY} === {h!r}")
    return h


def test_each_editor_undoes_their_own_actions_and_the_history_stays_shared(server, open_page):
    """Ada drags, Grace paints: Grace's Z clears her stroke and leaves Ada's drag; Grace drags on
    top; Ada's Z is refused (the image is Grace's now) with a message; Grace's Z takes her drag
    back in both tabs (no result text, step 0); Ada's next Z goes on with her own pair."""
    room = server.create_room(seed=12)
    ada = open_page(server.url + edit_path(room), name="Ada")
    grace = open_page(server.url + edit_path(room), name="Grace")
    for p in (ada, grace):
        p.wait_for_selector("#placeholder", state="hidden")
    assert ada.locator("#undo").is_disabled() and grace.locator("#undo").is_disabled()

    ada.evaluate("livedrag.app.edit(livedrag.protocol.msg.setParams({max_steps: 4}))")
    press_and_release(ada, (0.3, 0.3), (0.6, 0.5))  # Ada's pair
    grace.wait_for_function(
        "livedrag.model.state.pairs.length === 1 && livedrag.model.state.params.max_steps === 4"
    )
    ada.wait_for_function("livedrag.model.undoState.undo === 2")
    assert ada.locator("#undo").get_attribute("title").startswith("Undo your added point pair")
    assert grace.locator("#undo").is_disabled()  # nothing of Grace's yet

    run_drag(ada, [grace], size=2)  # Ada's drag commits the first edited image
    ada.wait_for_function("livedrag.model.undoState.undo_kind === 'drag'")
    for p in (ada, grace):
        assert p.locator("#drag-result").inner_text() != ""
        assert p.locator("#hud-step").inner_text() != "0"

    grace.keyboard.press("f")  # Grace paints a flexible stroke
    press_and_release(grace, (0.2, 0.8), (0.8, 0.8))
    ada.wait_for_function("livedrag.model.state.mask.cells.some(v => v === 1)")
    grace.wait_for_function("livedrag.model.undoState.undo_kind === 'paint_mask'")
    grace.keyboard.press("p")  # back to the points tool
    grace.wait_for_function("livedrag.app.editor.tool === 'points'")
    grace.keyboard.press("z")  # Grace's undo: her stroke, not Ada's drag
    ada.wait_for_function("!livedrag.model.state.mask.cells.some(v => v)")
    assert js(ada, HISTORY) == '{"index":1,"size":2}'
    assert js(ada, "livedrag.model.state.image.latent") is not None  # Ada's drag is still there
    grace.wait_for_function("livedrag.model.undoState.undo === 0 && livedrag.model.undoState.redo === 1")
    assert grace.locator("#undo").is_disabled() and grace.locator("#redo").is_enabled()

    run_drag(grace, [ada], size=3)  # Grace drags Ada's pair further: her image on top
    same_history(ada, grace)
    ada.keyboard.press("z")  # Ada's drag is under Grace's: refused, nothing changes
    ada.wait_for_function("livedrag.app.errors.some(e => e.code === 'undo_conflict')")
    assert "someone else changed the image since" in ada.locator("#toasts").inner_text()
    assert same_history(ada, grace) == '{"index":2,"size":3}'

    grace.keyboard.press("z")  # Grace takes her drag back: Ada's image again, everywhere
    for p in (ada, grace):
        p.wait_for_function(f'{HISTORY} === \'{{"index":1,"size":3}}\'')
        p.wait_for_function("document.getElementById('drag-result').textContent === ''")
        p.wait_for_function("document.getElementById('hud-step').textContent === '0'")

    ada.wait_for_function("livedrag.model.undoState.undo_kind === 'add_pair'")  # the drag was skipped
    ada.keyboard.press("z")  # Ada's own pair goes, for both
    grace.wait_for_function("livedrag.model.state.pairs.length === 0")
    ada.wait_for_function("livedrag.model.undoState.redo_kind === 'add_pair'")  # her page knows
    ada.keyboard.press("Shift+Z")  # and comes back
    grace.wait_for_function("livedrag.model.state.pairs.length === 1")
    assert js(grace, "livedrag.model.state.pairs[0].owner") == js(ada, "livedrag.model.you")
    assert same_history(ada, grace) == '{"index":1,"size":3}'
