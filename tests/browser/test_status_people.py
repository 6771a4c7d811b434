"""Issue 17 in headless Chromium against a real server: a lost connection shows at once and edits
are refused visibly; the page is back within 2 s of the server's return and reports a drag a crash
cut short; editors keep their identity after a restart and are asked for a name once; keys never
click a button that a click left focused; W / W+, reset and the explanations; the share popover,
toasts clear of the status bar, the avatar card; viewers see no editing controls."""

from __future__ import annotations

import time

from tests.browser.conftest import canvas_point, js, wait_joined
from tests.browser.live import edit_path, view_path


def add_pair(page, a=(0.3, 0.3), b=(0.6, 0.6)) -> None:
    n = js(page, "livedrag.model.state.pairs.length")
    page.mouse.move(*canvas_point(page, *a))
    page.mouse.down()
    page.mouse.move(*canvas_point(page, *b), steps=4)
    page.mouse.up()
    page.wait_for_function(
        f"livedrag.model.state.pairs.length === {n + 1} && livedrag.model.pending.length === 0"
    )


def boxes_overlap(a: dict, b: dict) -> bool:
    return not (
        a["x"] + a["width"] <= b["x"]
        or b["x"] + b["width"] <= a["x"]
        or a["y"] + a["height"] <= b["y"]
        or b["y"] + b["height"] <= a["y"]
    )


def test_a_crash_shows_at_once_refuses_edits_reconnects_within_2s_and_reports_the_drag(server, open_page):
    """The server dies mid-drag: at once the image dims with a card, the status bar says offline
    (not "Running"), a press on the image is refused with a message and sends nothing. When the
    server is back the page rejoins within 2 s, and the drag is reported as interrupted with its
    last checkpoint kept as a history entry."""
    room = server.create_room(seed=21)
    page = open_page(server.url + edit_path(room), name="Ada")
    page.evaluate(
        "livedrag.app.edit(livedrag.protocol.msg.setParams({max_steps: 10000, stop_dist: 0.1, lr: 0.0002}))"
    )
    add_pair(page)
    page.keyboard.press("Space")
    page.wait_for_function("livedrag.model.frame && livedrag.model.frame.drag === 1", timeout=30_000)
    time.sleep(3.0)  # the worker stores a checkpoint of the running drag every 2 s
    # ... at the first step at least 2 s into the drag, which a loaded machine may take a while to
    # reach: two more frames after the 3 s mark mean such a step ran and its checkpoint was saved
    # (the room saves before it sends the frame)
    step = js(page, "livedrag.model.frame.step")
    page.wait_for_function(f"livedrag.model.frame.step >= {step + 2}", timeout=30_000)
    assert page.locator("#hud-status-text").inner_text() == "Running"

    server.kill()
    t0 = time.monotonic()
    page.wait_for_function("document.body.classList.contains('conn-lost')", timeout=3_000)
    assert time.monotonic() - t0 < 1.5
    assert page.locator("#offline-veil").is_visible()
    assert "Edits are paused" in page.locator("#offline-text").inner_text()
    assert page.locator("#hud-status-text").inner_text() == "Offline · reconnecting"
    assert page.locator("#hud-fps").inner_text() == "–"
    assert not page.locator("#hud-step").is_visible()
    assert page.locator("#run").is_disabled()
    page.mouse.click(*canvas_point(page, 0.1, 0.9))  # beside the card: a press on the image
    page.wait_for_selector(".toast:has-text('Offline: edits are paused')")
    assert js(page, "livedrag.model.pending.length") == 0
    assert js(page, "livedrag.model.display().pairs.length") == 1

    time.sleep(4.0)  # down for a while: the retries must not drift apart
    server.start()
    t1 = time.monotonic()
    page.wait_for_function("livedrag.conn.joined", timeout=5_000)
    assert time.monotonic() - t1 < 2.0, "the page should be back within 2 s of the server"
    page.wait_for_selector("#offline-veil", state="hidden")
    interrupted = js(page, "livedrag.model.state.interrupted")
    assert interrupted["kind"] == "drag" and interrupted["drag"] == 1 and interrupted["step"] >= 2
    assert js(page, "livedrag.model.state.status") == "idle"
    assert js(page, "livedrag.model.state.history") == {"index": 1, "size": 2}
    assert js(page, "livedrag.model.state.image.latent") is not None
    assert page.locator("#hud-status-text").inner_text() == "Idle"
    result = page.locator("#drag-result").inner_text()
    assert result == f"The server stopped during the drag; its image from step {interrupted['step']} is kept."
    page.wait_for_selector(".toast:has-text('The server stopped during the drag')")
    assert page.locator("#run").is_enabled()


def test_editors_keep_member_id_name_and_colour_after_a_restart(server, open_page):
    """After a restart (and after a reload: a new page, another client_id) the same browser is the
    same member: id, name and colour, and the pair it placed is still its own."""
    room = server.create_room(seed=22)
    ada = open_page(server.url + edit_path(room), name="Ada")
    grace = open_page(server.url + edit_path(room), name="Grace")
    add_pair(ada)
    me, colour = js(ada, "livedrag.model.you"), js(ada, "livedrag.model.colour")
    grace_id = js(grace, "livedrag.model.you")
    assert len(js(ada, "localStorage.getItem('livedrag.secret')")) == 32

    server.stop()
    server.start()
    for p in (ada, grace):
        p.wait_for_function("livedrag.conn.joined && livedrag.model.members.size === 2", timeout=10_000)
    assert (js(ada, "livedrag.model.you"), js(ada, "livedrag.model.colour")) == (me, colour)
    assert js(grace, "livedrag.model.you") == grace_id
    assert js(ada, "livedrag.model.state.pairs[0].owner") == me
    assert js(grace, f"livedrag.model.members.get('{me}').name") == "Ada"
    assert js(grace, f"livedrag.model.members.get('{me}').colour") == colour

    ada.reload()
    wait_joined(ada)
    assert js(ada, "livedrag.model.you") == me and js(ada, "livedrag.model.name") == "Ada"
    grace.wait_for_function(f"livedrag.model.members.has('{me}') && livedrag.model.members.size === 2")


def test_a_new_person_is_asked_for_a_name_once(server, open_page):
    """Without a name this browser is asked once, in a card that does not block the page; the name
    is sent, kept and not asked for again; "Not now" is remembered too."""
    room = server.create_room(seed=23)
    page = open_page(server.url + edit_path(room))
    assert page.locator("#name-prompt").is_visible()
    assert js(page, "livedrag.model.name").startswith("Guest")
    add_pair(page)  # the page works behind the card
    page.fill("#name-input", "Lin")
    page.click("#name-prompt button[type=submit]")
    page.wait_for_function("livedrag.model.name === 'Lin'")
    assert not page.locator("#name-prompt").is_visible()
    assert page.locator("#members .member .name").all_inner_texts() == ["Lin"]
    page.reload()
    wait_joined(page)
    assert not page.locator("#name-prompt").is_visible()
    assert js(page, "livedrag.model.name") == "Lin"

    other = open_page(server.url + edit_path(room))
    other.click("#name-skip")
    assert not other.locator("#name-prompt").is_visible()
    other.reload()
    wait_joined(other)
    assert not other.locator("#name-prompt").is_visible()
    viewer = open_page(server.url + view_path(room))  # spectators are not listed: never asked
    assert not viewer.locator("#name-prompt").is_visible()


def test_keys_never_click_a_button_a_click_left_focused(server, open_page):
    """Space after clicking Random starts the drag (it used to make another new image and drop the
    pairs); after clicking W, Space stops it. A button reached with Tab still takes Space."""
    room = server.create_room(seed=24)
    page = open_page(server.url + edit_path(room), name="Ada")
    page.evaluate("livedrag.app.edit(livedrag.protocol.msg.setParams({max_steps: 10000, stop_dist: 0.1}))")
    page.click("#random-image")
    page.wait_for_function("livedrag.model.state.history.size === 2")
    seed = js(page, "livedrag.model.state.image.seed")
    add_pair(page)
    page.keyboard.press("Space")
    page.wait_for_function("livedrag.model.state.status === 'running'")
    assert js(page, "livedrag.model.state.image.seed") == seed
    assert js(page, "livedrag.model.state.pairs.length") == 1
    assert js(page, "livedrag.model.state.history.size") == 2
    page.click("#space button[data-space='w']")
    page.wait_for_function("livedrag.model.state.params.space === 'w'")
    page.keyboard.press("Space")
    page.wait_for_function("livedrag.model.state.status === 'idle'", timeout=20_000)
    assert js(page, "livedrag.model.state.params.space") == "w"

    page.focus("#new-image")
    page.keyboard.press("Tab")  # keyboard focus on Random: Space activates it, as everywhere
    assert js(page, "document.activeElement.id") == "random-image"
    page.keyboard.press("Space")
    page.wait_for_function(f"livedrag.model.state.image.seed !== {seed}")


def test_latent_space_reset_and_explanations_and_a_viewer_sees_no_editing_controls(server, open_page):
    """W / W+ reaches the other editor; Reset brings back the room's first image as a new history
    entry that undo takes back; max steps and stop distance are explained; a viewer sees the
    settings but no control to change anything."""
    room = server.create_room(seed=25)
    ada = open_page(server.url + edit_path(room), name="Ada")
    grace = open_page(server.url + edit_path(room), name="Grace")
    assert ada.locator("#space button[data-space='w+']").get_attribute("aria-checked") == "true"
    ada.click("#space button[data-space='w']")
    grace.wait_for_function("livedrag.model.state.params.space === 'w'")
    assert grace.locator("#space button[data-space='w']").get_attribute("aria-checked") == "true"
    help_text = ada.locator("#params-help").inner_text()
    assert "Max steps" in help_text and "Stop distance" in help_text
    assert "W+" in ada.locator("#space-note").inner_text()

    ada.fill("#seed", "777")
    ada.click("#new-image")
    grace.wait_for_function("livedrag.model.state.image.seed === 777")
    ada.click("#reset-image")
    grace.wait_for_function(
        "livedrag.model.state.image.seed === 25 && livedrag.model.state.history.size === 3"
    )
    ada.click("#undo")
    grace.wait_for_function("livedrag.model.state.image.seed === 777")

    viewer = open_page(server.url + view_path(room), name="Watcher")
    hidden = [
        "#toolbar",
        "#run",
        "#reset-image",
        "#new-image",
        "#seed",
        "#upload-pick",
        "#project-method",
        "#blend-apply",
        "#space button[data-space='w+']",
        "#name-prompt",
        "#share-edit-row",
    ]
    for sel in hidden:
        assert not viewer.locator(sel).is_visible(), sel
    assert viewer.locator("#space button[data-space='w']").is_visible()  # the setting, read-only
    assert viewer.locator("#space button[data-space='w']").is_disabled()


def test_share_popover_closes_after_a_copy_and_toasts_stay_clear_of_the_status_bar(server, open_page):
    """Copying a link closes the popover and confirms in a toast that covers neither the status bar
    under the image nor, on a phone, anything below the top bar."""
    room = server.create_room(seed=26)
    for width, height in ((1280, 800), (900, 700), (390, 844)):
        page = open_page(server.url + edit_path(room), name="Ada", width=width, height=height)
        page.click("#share-btn")
        assert page.locator("#share-pop").is_visible()
        page.click("#copy-view")
        page.wait_for_selector("#share-pop", state="hidden")
        toast = page.locator(".toast").last
        toast.wait_for()
        assert "copied" in toast.inner_text()
        hud = page.locator("#hud").bounding_box()
        assert not boxes_overlap(toast.bounding_box(), hud), (width, toast.bounding_box(), hud)
        if width > 640:
            assert not boxes_overlap(toast.bounding_box(), page.locator("#run").bounding_box())


def test_clicking_an_avatar_shows_who_it_is_and_where_their_cursor_is(server, open_page):
    """An avatar in the top bar opens a card with the person's name and where their cursor is on
    the image, and points the cursor out on the stage; Escape closes it."""
    room = server.create_room(seed=27)
    ada = open_page(server.url + edit_path(room), name="Ada")
    grace = open_page(server.url + edit_path(room), name="Grace")
    gid = js(grace, "livedrag.model.you")
    grace.mouse.move(*canvas_point(grace, 0.25, 0.75), steps=3)
    ada.wait_for_function("livedrag.model.otherCursors().length === 1")
    ada.click(f"#facepile .face[data-id='{gid}']")
    card = ada.locator("#person-pop")
    assert card.is_visible()
    assert ada.locator("#person-name").inner_text() == "Grace"
    assert "on the image" in ada.locator("#person-cursor").inner_text()
    assert js(ada, "livedrag.app.spotlight.id") == gid
    ada.keyboard.press("Escape")
    assert not card.is_visible()
    ada.click(f"#facepile .face[data-id='{js(ada, 'livedrag.model.you')}']")
    assert ada.locator("#person-name").inner_text() == "Ada (you)"
