"""Real images in headless Chromium: an editor uploads a picture, a spectator in another browser
context watches the projection (frames, progress, target thumbnail), the editor stops it, undoes it."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tests.browser.conftest import canvas_point, image_checksum, js
from tests.browser.live import edit_path, view_path


def png_bytes(size: int = 40) -> bytes:
    a = np.zeros((size, size, 3), np.uint8)
    a[..., 0] = np.linspace(0, 255, size, dtype=np.uint8)[None]
    a[size // 3 :, :, 2] = 220
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def test_an_upload_projects_live_in_another_context_and_can_be_stopped_and_undone(server, open_page):
    """Upload in one context; the spectator's frames change, progress and the target show; Stop
    commits the projection, which undo takes back."""
    room = server.create_room(seed=5)
    ada = open_page(server.url + edit_path(room), name="Ada")
    viewer = open_page(server.url + view_path(room), name="")
    viewer.wait_for_selector("#placeholder", state="hidden")
    viewer.wait_for_function("livedrag.model.frame !== null")
    before = image_checksum(viewer)

    ada.set_input_files(
        "#upload-file", files=[{"name": "me.png", "mimeType": "image/png", "buffer": png_bytes()}]
    )
    viewer.wait_for_function("livedrag.model.state.status === 'projecting'")
    viewer.wait_for_function("livedrag.model.progress && livedrag.model.progress.step >= 2")
    viewer.wait_for_selector("#project-bar", state="visible")
    assert "Projecting" in viewer.locator("#project-text").inner_text()
    viewer.wait_for_function("document.getElementById('target-img').naturalWidth === 32")
    assert viewer.locator("#target-thumb").is_visible()
    viewer.wait_for_function(
        f"""() => {{
        const c = document.getElementById('image-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let h = 0;
        for (let i = 0; i < d.length; i += 7) h = (h * 31 + d[i]) >>> 0;
        return h !== {before};
    }}"""
    )
    assert viewer.locator("#project-stop").is_disabled()  # spectators watch only

    ada.wait_for_function("livedrag.model.progress && livedrag.model.progress.step >= 1")
    ada.click("#project-stop")
    viewer.wait_for_function(
        "livedrag.model.state.status === 'idle' && livedrag.model.state.history.size === 2"
    )
    assert js(viewer, "livedrag.model.state.image.latent") is not None
    assert viewer.locator("#project-bar").is_hidden() and viewer.locator("#target-thumb").is_hidden()
    ada.wait_for_function("document.getElementById('drag-result').textContent.includes('Projection stopped')")

    ada.click("#undo")
    viewer.wait_for_function("livedrag.model.state.history.index === 0")
    assert js(viewer, "livedrag.model.state.image.latent") is None
    assert js(viewer, "livedrag.model.state.upload.w") == 32


def test_a_bad_upload_shows_the_servers_message(server, open_page):
    """A file that is not a picture is refused with the server's message; nothing changes."""
    room = server.create_room(seed=6)
    ada = open_page(server.url + edit_path(room), name="Ada")
    version = js(ada, "livedrag.model.version")
    ada.set_input_files(
        "#upload-file", files=[{"name": "x.png", "mimeType": "image/png", "buffer": b"not a png"}]
    )
    ada.wait_for_function(
        "livedrag.app.lastUploadError !== undefined && livedrag.app.lastUploadError !== null"
    )
    assert "PNG, JPEG or WebP" in js(ada, "livedrag.app.lastUploadError")
    ada.wait_for_selector(".toast.is-error")
    assert js(ada, "livedrag.model.version") == version and js(ada, "livedrag.model.state.upload") is None


def test_dropping_a_picture_on_the_image_uploads_it(server, open_page):
    """A file dropped on the canvas area starts a projection (drag-and-drop upload)."""
    room = server.create_room(seed=7)
    ada = open_page(server.url + edit_path(room), name="Ada")
    data = list(png_bytes())
    ada.evaluate(
        """(bytes) => {
        const dt = new DataTransfer();
        dt.items.add(new File([new Uint8Array(bytes)], 'drop.png', { type: 'image/png' }));
        const area = document.getElementById('canvas-area');
        area.dispatchEvent(new DragEvent('dragenter', { dataTransfer: dt, bubbles: true, cancelable: true }));
        area.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    }""",
        data,
    )
    ada.wait_for_function("livedrag.model.state.upload !== null && livedrag.model.lastTask !== null")
    assert js(ada, "livedrag.model.lastTask.kind") == "upload"
    assert ada.locator("#drop-zone").is_hidden()
    ada.keyboard.press("Space")  # Space stops a projection as it stops a drag
    ada.wait_for_function("livedrag.model.state.status === 'idle' && livedrag.model.state.task === null")


def test_blend_from_another_seed_in_a_painted_region(server, open_page):
    """Paint a flexible region, pick a seed, Apply: the blend runs and commits a history entry."""
    room = server.create_room(seed=8)
    ada = open_page(server.url + edit_path(room), name="Ada")
    ada.click("#blend-apply")
    ada.wait_for_selector(".toast.is-error")  # nothing painted yet: told what to do, nothing sent
    assert js(ada, "livedrag.model.version") == 0
    ada.keyboard.press("f")
    ada.mouse.move(*canvas_point(ada, 0.3, 0.5))
    ada.mouse.down()
    ada.mouse.move(*canvas_point(ada, 0.7, 0.5), steps=6)
    ada.mouse.up()
    ada.wait_for_function("livedrag.model.state.mask.cells.includes(1)")
    if not ada.locator("#blend-seed").is_visible():
        ada.click("#panel-btn")
    ada.fill("#blend-seed", "11")
    ada.fill("#blend-steps", "3")
    ada.click("#blend-apply")
    ada.wait_for_function("livedrag.model.lastTask && livedrag.model.lastTask.kind === 'blend'")
    ada.wait_for_function("livedrag.model.state.status === 'idle' && livedrag.model.state.history.size === 2")
    assert js(ada, "livedrag.model.state.image.latent") is not None
    assert js(ada, "livedrag.model.state.mask.cells.some(v => v)") is False
