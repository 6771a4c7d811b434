"""Real images in headless Chromium: an editor uploads a picture, a spectator in another browser
context watches the projection (frames, progress, target thumbnail), the editor stops it, undoes it."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tests.browser.conftest import image_checksum, js
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
