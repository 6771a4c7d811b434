"""Deleting a room in headless Chromium against a real server: an editor deletes it after a
confirmation, every other page in the room (editors and spectators) is told at once, and the
room's links then say the room was deleted; viewers have no delete button."""

from __future__ import annotations

from tests.browser.conftest import js
from tests.browser.live import edit_path, view_path


def test_an_editor_deletes_the_room_and_everyone_sees_it(server, open_page):
    """Ada presses Delete room: a confirmation (Cancel focused; Cancel and Escape keep the room),
    then Delete: Bob (editor) and a spectator get the "This room was deleted" card, Ada "Room
    deleted"; a reload of the link shows the card again, and nothing in the pages failed."""
    room = server.create_room(seed=31)
    ada = open_page(server.url + edit_path(room), name="Ada")
    bob = open_page(server.url + edit_path(room), name="Bob")
    vi = open_page(server.url + view_path(room))
    assert not vi.locator("#delete-room").is_visible()  # viewers cannot delete
    assert js(vi, "livedrag.model.isEditor") is False

    ada.locator("#delete-room").click()
    dialog = ada.locator("#delete-dialog")
    assert dialog.is_visible() and "cannot be undone" in dialog.inner_text()
    assert js(ada, "document.activeElement.id") == "delete-cancel"
    ada.locator("#delete-cancel").click()
    assert dialog.is_hidden()
    ada.locator("#delete-room").click()
    ada.keyboard.press("Escape")
    assert dialog.is_hidden()
    assert js(bob, "livedrag.conn.joined") and js(vi, "livedrag.conn.joined")

    ada.locator("#delete-room").click()
    ada.locator("#delete-confirm").click()
    for page, title in ((bob, "This room was deleted"), (vi, "This room was deleted"), (ada, "Room deleted")):
        page.wait_for_selector("#fatal:not([hidden])", timeout=5_000)
        assert page.locator("#fatal-title").inner_text() == title
        assert page.locator("#fatal").get_attribute("data-reason") == "room_closed"
        page.wait_for_function("livedrag.conn.state === 'failed'", timeout=5_000)  # 4014: no retry
    assert "An editor deleted this room" in bob.locator("#fatal-text").inner_text()
    assert dialog.is_hidden()

    bob.reload()
    bob.wait_for_selector("#fatal:not([hidden])", timeout=10_000)
    assert bob.locator("#fatal-title").inner_text() == "This room was deleted"
    recent = js(bob, "JSON.parse(localStorage.getItem('livedrag.recent') || '[]').map(r => r.room)")
    assert room["room"] not in recent
