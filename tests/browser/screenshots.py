"""Screenshots of the web client, taken in headless Chromium against a real server.

    python -m tests.browser.screenshots                 # every view into ./screenshots/
    python -m tests.browser.screenshots --readme        # also docs/img/room.png and room_projecting.png
    python -m tests.browser.screenshots --checkpoint G.safetensors

The README's picture is a room with two editors mid-drag: points from both, a flexible mask, the
other editor's cursor. Without --checkpoint the embedded default model is used when it is built,
else a small random generator (abstract colour fields instead of faces).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

from tests.browser.live import REPO, LiveServer, edit_path, launch_chromium, make_checkpoint, view_path

DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


def pick_checkpoint(arg: str | None, tmp: Path) -> Path:
    if arg:
        return Path(arg)
    from server.engine.checkpoint import default_checkpoint_path

    embedded = default_checkpoint_path()
    if embedded is not None and embedded.exists():
        return embedded
    return make_checkpoint(tmp, res=128, seed=3, channel_base=8192, channel_max=128, w_dim=128, z_dim=128)


def new_page(browser: Any, url: str, name: str, viewport: dict[str, int], scale: float = 1, **kw: Any):
    ctx = browser.new_context(viewport=viewport, device_scale_factor=scale, **kw)
    ctx.add_init_script(f"localStorage.setItem('livedrag.name', {name!r})")
    page = ctx.new_page()
    page.goto(url)
    page.wait_for_function("window.livedrag && livedrag.conn && livedrag.conn.joined && livedrag.model.state")
    page.wait_for_selector("#placeholder", state="hidden", timeout=30_000)
    return page


def at(page: Page, fx: float, fy: float) -> tuple[float, float]:
    box = page.locator("#overlay-canvas").bounding_box()
    assert box is not None
    return box["x"] + box["width"] * fx, box["y"] + box["height"] * fy


def drag(page: Page, a: tuple[float, float], b: tuple[float, float]) -> None:
    page.mouse.move(*at(page, *a))
    page.mouse.down()
    page.mouse.move(*at(page, *b), steps=8)
    page.mouse.up()


def shoot(page: Page, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    print(f"wrote {path}")


def run(out: Path, checkpoint: str | None, readme: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        srv = LiveServer(pick_checkpoint(checkpoint, tmp), tmp / "data", max_fps=12)
        srv.start()
        try:
            room = srv.create_room(seed=11)
            with sync_playwright() as pw:
                browser = launch_chromium(pw)
                _room_views(browser, srv, room, out, readme)
                _upload_view(browser, srv, out, readme)
                _other_views(browser, srv, out)
                _offline_view(browser, srv, room, out)
                browser.close()
        finally:
            srv.stop()


def _room_views(browser: Any, srv: LiveServer, room: dict[str, Any], out: Path, readme: bool) -> None:
    ada = new_page(browser, srv.url + edit_path(room), "Ada", DESKTOP)
    grace = new_page(browser, srv.url + edit_path(room), "Grace", DESKTOP)
    slow = "{lr: 0.0007, max_steps: 4000, stop_dist: 0.5}"  # a drag that lasts long enough to be seen
    ada.evaluate(f"livedrag.app.edit(livedrag.protocol.msg.setParams({slow}))")
    # a flexible area around the middle
    ada.keyboard.press("f")
    ada.evaluate("livedrag.app.editor.setBrushRadius(14)")
    drag(ada, (0.3, 0.42), (0.7, 0.47))
    ada.keyboard.press("p")
    drag(ada, (0.36, 0.4), (0.47, 0.3))
    drag(ada, (0.62, 0.55), (0.7, 0.66))
    grace.mouse.click(*at(grace, 0.5, 0.62))
    grace.mouse.click(*at(grace, 0.44, 0.74))
    ada.wait_for_function("livedrag.model.state.pairs.length === 3")
    shoot(ada, out / "room-idle.png")
    ada.keyboard.press("Space")
    mid_drag = "livedrag.model.frame && livedrag.model.frame.drag === 1 && livedrag.model.frame.step >= 12"
    ada.wait_for_function(mid_drag, timeout=60_000)
    grace.mouse.move(*at(grace, 0.8, 0.24), steps=4)
    grace.mouse.move(*at(grace, 0.74, 0.3), steps=6)
    ada.mouse.move(*at(ada, 0.2, 0.85))
    time.sleep(0.6)
    shoot(ada, out / "room-running.png")
    if readme:
        shoot(ada, REPO / "docs" / "img" / "room.png")
    viewer = new_page(browser, srv.url + view_path(room), "Watcher", DESKTOP)
    time.sleep(0.5)
    shoot(viewer, out / "room-viewer.png")
    ada.keyboard.press("Space")
    ada.wait_for_function("livedrag.model.state.status === 'idle'", timeout=30_000)
    ada.wait_for_function("livedrag.model.lastEnd !== null")
    ada.click("#share-btn")
    shoot(ada, out / "room-share.png")
    ada.keyboard.press("Escape")
    ada.keyboard.press("?")
    shoot(ada, out / "room-help.png")
    ada.keyboard.press("Escape")

    touch = {"is_mobile": True, "has_touch": True}
    phone = new_page(browser, srv.url + edit_path(room), "Lin", PHONE, scale=2, **touch)
    time.sleep(0.3)
    shoot(phone, out / "phone-room.png")
    phone.click("#panel-btn")
    time.sleep(0.4)
    shoot(phone, out / "phone-panel.png")
    tablet = new_page(browser, srv.url + edit_path(room), "Kim", {"width": 820, "height": 1180}, scale=1)
    shoot(tablet, out / "tablet-room.png")


def _upload_view(browser: Any, srv: LiveServer, out: Path, readme: bool) -> None:
    """A projection in progress: a rendered SynthFaces face (a picture the generator never drew)
    uploaded by one editor, watched converging with its target thumbnail and PSNR."""
    import io

    from PIL import Image

    from server.synthfaces import render_seed

    img, _ = render_seed(5_000_123, 256)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    room = srv.create_room(seed=4)
    ada = new_page(browser, srv.url + edit_path(room), "Ada", DESKTOP)
    ada.wait_for_function("livedrag.model.frame !== null")
    ada.set_input_files(
        "#upload-file", files=[{"name": "face.png", "mimeType": "image/png", "buffer": buf.getvalue()}]
    )
    ada.wait_for_function("livedrag.model.progress && livedrag.model.progress.step >= 25", timeout=60_000)
    time.sleep(3.5)  # the "Projecting your picture" toast fades
    ada.wait_for_function("document.getElementById('target-img').naturalWidth > 0")
    time.sleep(0.3)
    shoot(ada, out / "room-projecting.png")
    if readme:
        shoot(ada, REPO / "docs" / "img" / "room_projecting.png")


def _other_views(browser: Any, srv: LiveServer, out: Path) -> None:
    ctx = browser.new_context(viewport=DESKTOP)
    page = ctx.new_page()
    page.goto(srv.url + "/")
    page.wait_for_selector("#server-info:not(:empty)")
    time.sleep(0.3)
    shoot(page, out / "start.png")
    page.goto(srv.url + "/r/NoSuchRoom#edit=abc")
    page.wait_for_selector("#fatal:not([hidden])")
    shoot(page, out / "room-not-found.png")
    phone = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    p = phone.new_page()
    p.goto(srv.url + "/")
    time.sleep(0.3)
    shoot(p, out / "phone-start.png")


def _offline_view(browser: Any, srv: LiveServer, room: dict[str, Any], out: Path) -> None:
    page = new_page(browser, srv.url + edit_path(room), "Ada", DESKTOP)
    srv.stop()
    page.wait_for_selector("#offline-veil:not([hidden])", timeout=5_000)  # at once
    shoot(page, out / "room-offline.png")
    page.wait_for_selector("#banner:not([hidden])", timeout=15_000)  # the cause, after about 5 s
    shoot(page, out / "room-offline-banner.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("screenshots"), help="folder for the pictures")
    ap.add_argument("--checkpoint", help="generator .safetensors (default: embedded model or a random one)")
    ap.add_argument("--readme", action="store_true", help="also write docs/img/room.png")
    args = ap.parse_args()
    run(args.out, args.checkpoint, args.readme)


if __name__ == "__main__":
    main()
