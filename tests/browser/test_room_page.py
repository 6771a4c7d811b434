"""End to end in headless Chromium against a real server: the start page, two editors in one room,
a live drag, a view-only spectator, clear errors for bad links, and reconnecting after a restart."""

from __future__ import annotations

import time

from tests.browser.conftest import canvas_point, image_checksum, js, wait_joined
from tests.browser.live import edit_path, view_path


def test_start_page_creates_a_room_and_opens_its_edit_link(server, open_page):
    """Creating a room from the start page lands on the room's edit link with the image drawn."""
    page = open_page(server.url + "/", join=False)
    page.fill("#seed", "7")
    page.click("#create")
    page.wait_for_url("**/r/*#edit=*")
    wait_joined(page)
    assert js(page, "livedrag.model.role") == "editor"
    assert js(page, "livedrag.model.state.image.seed") == 7
    page.wait_for_selector("#placeholder", state="hidden")
    assert page.locator("#edit-link").input_value().startswith(server.url + "/r/")
    view_link = page.locator("#view-link").input_value()
    assert "#view=" in view_link

    # the start page also opens a pasted link (here: the view-only one)
    start = open_page(server.url + "/", join=False)
    start.fill("#link", view_link)
    start.click("#open-form button[type=submit]")
    wait_joined(start)
    assert js(start, "livedrag.model.role") == "viewer"


def test_two_editors_see_each_others_points_names_and_cursors(server, open_page):
    """A pair added by pressing and releasing in one tab appears, with its owner, in the other tab;
    a pair made with two clicks and a dragged target travel the other way; cursors show up."""
    room = server.create_room(seed=1)
    ada = open_page(server.url + edit_path(room), name="Ada")
    grace = open_page(server.url + edit_path(room), name="Grace")
    ada.wait_for_function("livedrag.model.members.size === 2")
    assert ada.locator("#members .member .name").all_inner_texts() == ["Ada", "Grace"]

    # Ada: press on the handle, release on the target
    ada.mouse.move(*canvas_point(ada, 0.3, 0.3))
    ada.mouse.down()
    ada.mouse.move(*canvas_point(ada, 0.6, 0.4), steps=6)
    ada.mouse.up()
    grace.wait_for_function("livedrag.model.state.pairs.length === 1")
    pair = js(grace, "livedrag.model.state.pairs[0]")
    assert pair["owner"] == js(ada, "livedrag.model.you")
    assert abs(pair["handle"][0] - (0.3 * 32 - 0.5)) < 1 and abs(pair["target"][0] - (0.6 * 32 - 0.5)) < 1

    # Grace: click the handle, click the target
    grace.mouse.click(*canvas_point(grace, 0.7, 0.8))
    assert grace.locator("#hint").is_visible()
    grace.mouse.click(*canvas_point(grace, 0.8, 0.6))
    ada.wait_for_function("livedrag.model.state.pairs.length === 2")
    assert js(ada, "livedrag.model.state.pairs[1].owner") == js(grace, "livedrag.model.you")

    # Grace drags Ada's target; Ada sees it move
    grace.mouse.move(*canvas_point(grace, 0.6, 0.4))
    grace.mouse.down()
    grace.mouse.move(*canvas_point(grace, 0.5, 0.7), steps=8)
    grace.mouse.up()
    ada.wait_for_function("Math.abs(livedrag.model.state.pairs[0].target[1] - (0.7 * 32 - 0.5)) < 1")

    # Grace's cursor (with her name) is in Ada's view
    grace.mouse.move(*canvas_point(grace, 0.2, 0.9), steps=3)
    ada.wait_for_function("livedrag.model.otherCursors().some(c => c.name === 'Grace')")

    # Grace renames herself; Ada's list follows and Grace's browser remembers the name
    grace.locator("#members .member .edit-name").click()
    grace.keyboard.press("Control+A")
    grace.keyboard.type("Grace H.")
    grace.keyboard.press("Enter")
    ada.wait_for_function("[...livedrag.model.members.values()].some(m => m.name === 'Grace H.')")
    assert js(grace, "localStorage.getItem('livedrag.name')") == "Grace H."

    # select + Delete removes a pair for everyone
    ada.mouse.click(*canvas_point(ada, 0.7, 0.8))  # Grace's handle
    ada.keyboard.press("Delete")
    grace.wait_for_function("livedrag.model.state.pairs.length === 1")


def test_a_drag_streams_frames_to_every_tab(server, open_page):
    """Start: both tabs draw new frames (pixels change, seq grows, acks flow) and the tracked handle
    moves; Space stops it, the commit can be undone, and the downloads work."""
    room = server.create_room(seed=2)
    ada = open_page(server.url + edit_path(room), name="Ada")
    grace = open_page(server.url + edit_path(room), name="Grace")
    for p in (ada, grace):
        p.wait_for_selector("#placeholder", state="hidden")
    ada.evaluate("livedrag.app.edit(livedrag.protocol.msg.setParams({max_steps: 10000, stop_dist: 0.1}))")
    ada.mouse.move(*canvas_point(ada, 0.25, 0.25))
    ada.mouse.down()
    ada.mouse.move(*canvas_point(ada, 0.75, 0.75), steps=5)
    ada.mouse.up()
    grace.wait_for_function(
        "livedrag.model.state.pairs.length === 1 && livedrag.model.state.params.max_steps === 10000"
    )
    before = [image_checksum(ada), image_checksum(grace)]
    handle0 = js(grace, "livedrag.model.state.pairs[0].handle")

    ada.click("#run")  # the mouse starts it, Space stops it: the button keeps no focus to re-click
    for p in (ada, grace):
        p.wait_for_function(
            # frames arrive, then decode and draw asynchronously: wait for both
            "livedrag.model.frame && livedrag.model.frame.drag === 1 && livedrag.model.frame.seq >= 4"
            " && livedrag.app.pipeline.lastSeq >= 4",
            timeout=40_000,
        )
    assert js(ada, "livedrag.app.pipeline.lastSeq") >= 4
    assert [image_checksum(ada), image_checksum(grace)] != before
    assert ada.locator("#run-label").inner_text() == "Stop"
    assert grace.locator("#hud-status-text").inner_text() == "Running"
    assert js(grace, "livedrag.model.display().pairs[0].handle") != handle0  # tracked handle moved

    ada.keyboard.press("Space")
    grace.wait_for_function(
        "livedrag.model.state.status === 'idle' && livedrag.model.state.history.size === 2", timeout=20_000
    )
    grace.wait_for_function("livedrag.model.lastEnd && livedrag.model.lastEnd.reason === 'stopped'")
    assert grace.locator("#drag-result").inner_text().startswith("Stopped after")
    ada.wait_for_function("livedrag.model.undoState.undo_kind === 'drag'")  # undo is per person:
    assert ada.locator("#undo").is_enabled() and grace.locator("#undo").is_disabled()  # Ada's drag
    ada.keyboard.press("z")
    grace.wait_for_function("livedrag.model.state.history.index === 0")

    # downloads: the committed PNG, the latent and the last drag's GIF, authorised by the link's key
    downloads = {"#dl-png": "image/png", "#dl-latent": "application/octet-stream", "#dl-gif": "image/gif"}
    for sel, kind in downloads.items():
        href = ada.locator(sel).get_attribute("href")
        status, ctype, size = ada.evaluate(
            "async (u) => { const r = await fetch(u); const b = await r.arrayBuffer();"
            " return [r.status, r.headers.get('content-type'), b.byteLength]; }",
            href,
        )
        assert (status, ctype) == (200, kind), (sel, status, ctype)
        assert size > 0


def test_mask_painting_reaches_the_other_tab(server, open_page):
    """A flexible brush stroke and a fixed one arrive in the other tab's mask grid; clear empties it."""
    room = server.create_room(seed=3)
    ada = open_page(server.url + edit_path(room), name="Ada")
    grace = open_page(server.url + edit_path(room), name="Grace")
    ada.keyboard.press("f")
    ada.mouse.move(*canvas_point(ada, 0.2, 0.5))
    ada.mouse.down()
    ada.mouse.move(*canvas_point(ada, 0.8, 0.5), steps=10)
    ada.mouse.up()
    ada.keyboard.press("x")
    ada.mouse.click(*canvas_point(ada, 0.5, 0.15))
    grace.wait_for_function(
        "(() => { const c = livedrag.model.state.mask.cells; return c.includes(1) && c.includes(2); })()"
    )
    assert js(grace, "livedrag.model.state.mask.cells[16 * 32 + 16]") == 1  # the stroke's middle
    ada.keyboard.press("Shift+M")
    grace.wait_for_function("!livedrag.model.state.mask.cells.some(v => v)")


def test_view_only_link_shows_everything_and_cannot_edit(server, open_page):
    """A spectator sees pairs and frames but gets no editing controls, is counted, not listed, and a
    forced edit over its socket is refused with forbidden."""
    room = server.create_room(seed=4)
    ada = open_page(server.url + edit_path(room), name="Ada")
    ada.mouse.move(*canvas_point(ada, 0.3, 0.3))
    ada.mouse.down()
    ada.mouse.move(*canvas_point(ada, 0.5, 0.5), steps=4)
    ada.mouse.up()
    viewer = open_page(server.url + view_path(room), name="Watcher")
    assert js(viewer, "livedrag.model.role") == "viewer"
    viewer.wait_for_function("livedrag.model.state.pairs.length === 1")
    viewer.wait_for_selector("#placeholder", state="hidden")
    ada.wait_for_function("livedrag.model.spectators === 1")
    assert "1 spectator" in ada.locator("#spectators-line").inner_text()
    assert js(viewer, "[...livedrag.model.members.values()].map(m => m.name)") == ["Ada"]
    for sel in ("#toolbar", "#run", "#new-image", "#random-image", "#copy-edit", "#share-edit-row"):
        assert not viewer.locator(sel).is_visible(), sel
    assert viewer.locator("#role-badge").is_visible()
    # pressing and keys do nothing
    viewer.mouse.move(*canvas_point(viewer, 0.8, 0.2))
    viewer.mouse.down()
    viewer.mouse.move(*canvas_point(viewer, 0.9, 0.3), steps=3)
    viewer.mouse.up()
    viewer.keyboard.press("Space")
    time.sleep(0.3)
    assert js(ada, "livedrag.model.state.pairs.length") == 1
    assert js(ada, "livedrag.model.state.status") == "idle"
    # a forced edit is refused by the server
    viewer.evaluate(
        "livedrag.conn.ws.send(livedrag.protocol.encode("
        "{t: 'add_pair', id: 99, pair: 'forced', handle: [1, 1], target: [2, 2]}))"
    )
    viewer.wait_for_function("livedrag.app.errors.some(e => e.code === 'forbidden' && e.ref === 99)")
    assert js(ada, "livedrag.model.state.pairs.length") == 1


def test_bad_links_get_clear_messages(server, open_page):
    """A wrong key (4001), an unknown room (4004) and a link without a key each explain themselves."""
    room = server.create_room(seed=5)
    page = open_page(server.url + f"/r/{room['room']}", join=False)
    page.wait_for_selector("#fatal:not([hidden])")
    assert page.locator("#fatal-title").inner_text() == "This link is incomplete"
    for url, title in (
        ("/r/NoSuchRoom123#edit=whatever", "Room not found"),
        (f"/r/{room['room']}#edit=not-the-key", "This link is not valid"),
    ):
        page.goto(server.url + url)
        page.wait_for_selector("#fatal:not([hidden])")
        assert page.locator("#fatal-title").inner_text() == title
        assert js(page, "livedrag.conn.state") == "failed"  # no retrying


def test_help_overlay_lists_the_shortcuts(server, open_page):
    """'?' opens the shortcut list and Escape closes it."""
    room = server.create_room(seed=6)
    page = open_page(server.url + edit_path(room))
    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    assert "Start or stop the drag" in page.locator("#shortcuts").inner_text()
    page.keyboard.press("Escape")
    assert not page.locator("#help").is_visible()


def test_reconnects_after_a_server_restart(server, open_page):
    """When the server restarts on the same port and data dir, the page goes offline (edits off, a
    banner after about 5 s), reconnects by itself and resyncs the room from the new snapshot."""
    room = server.create_room(seed=8)
    page = open_page(server.url + edit_path(room), name="Ada")
    page.mouse.move(*canvas_point(page, 0.3, 0.3))
    page.mouse.down()
    page.mouse.move(*canvas_point(page, 0.6, 0.6), steps=4)
    page.mouse.up()
    page.wait_for_function("livedrag.model.state.pairs.length === 1 && livedrag.model.pending.length === 0")
    me = js(page, "livedrag.model.you")
    client_id = js(page, "livedrag.conn.clientId")

    server.stop()  # closes every connection with 4012 shutting_down
    page.wait_for_function("document.body.classList.contains('offline')")
    assert page.locator("#run").is_disabled()
    assert not page.locator("#banner").is_visible()  # not at once
    page.wait_for_selector("#banner:not([hidden])", timeout=12_000)
    assert "Reconnecting" in page.locator("#banner-text").inner_text()

    server.start()
    wait_joined(page, timeout=40_000)
    page.wait_for_selector("#banner", state="hidden")
    assert js(page, "livedrag.conn.clientId") == client_id  # one id per page load
    assert js(page, "livedrag.model.state.pairs[0].owner") == me  # the room came back from the store
    assert page.locator("#run").is_enabled()
    page.wait_for_selector("#placeholder", state="hidden")
