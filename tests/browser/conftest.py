"""Fixtures for the end-to-end browser tests: a real ``livedrag serve`` with a tiny generator, and
Debian's Chromium driven by Playwright. Skipped when /usr/bin/chromium (or Playwright) is missing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.browser.live import CHROMIUM, LiveServer, launch_chromium, make_checkpoint

try:
    from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
except ImportError:  # pragma: no cover - playwright is a dev dependency
    sync_playwright = None

SKIP_REASON = (
    f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium) and Playwright for Python"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    missing = sync_playwright is None or not CHROMIUM.exists()
    for item in items:
        if "tests/browser/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.browser)
            if missing:
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


# Module scope: a session-wide sync Playwright keeps its event loop registered as running while the
# asyncio tests that come after the browser tests run, and their loops then fail at teardown.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = launch_chromium(pw)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the module's tests (each test makes its own room)."""
    d = tmp_path_factory.mktemp("live")
    srv = LiveServer(make_checkpoint(d), d / "data")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """open_page(url, name=..., width=..., height=...) -> a page in a fresh browser context."""
    contexts: list[BrowserContext] = []
    pages: list[Page] = []

    def _open(url: str, name: str = "", width: int = 1280, height: int = 800, join: bool = True) -> Page:
        ctx = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(ctx)
        if name:
            ctx.add_init_script(f"localStorage.setItem('livedrag.name', {name!r})")
        page = ctx.new_page()
        page.set_default_timeout(15_000)
        page._livedrag_errors = []  # type: ignore[attr-defined]
        page.on("pageerror", lambda e: page._livedrag_errors.append(str(e)))  # type: ignore[attr-defined]
        pages.append(page)
        page.goto(url)
        if join:
            wait_joined(page)
        return page

    yield _open
    for page in pages:
        errors = page._livedrag_errors  # type: ignore[attr-defined]
        assert not errors, f"uncaught errors in the page: {errors}"
    for ctx in contexts:
        ctx.close()


def wait_joined(page: Page, timeout: float = 15_000) -> None:
    page.wait_for_function(
        "window.livedrag && window.livedrag.conn && window.livedrag.conn.joined "
        "&& window.livedrag.model.state !== null",
        timeout=timeout,
    )


def js(page: Page, expr: str) -> Any:
    return page.evaluate(f"() => {expr}")


def canvas_point(page: Page, fx: float, fy: float) -> tuple[float, float]:
    """Viewport coordinates of a point at fractions (fx, fy) of the image canvas."""
    box = page.locator("#overlay-canvas").bounding_box()
    assert box is not None
    return box["x"] + box["width"] * fx, box["y"] + box["height"] * fy


def image_checksum(page: Page) -> int:
    """A checksum of the pixels on the image canvas (changes when a new frame is drawn)."""
    return page.evaluate(
        """() => {
        const c = document.getElementById('image-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let h = 0;
        for (let i = 0; i < d.length; i += 7) h = (h * 31 + d[i]) >>> 0;
        return h;
    }"""
    )
