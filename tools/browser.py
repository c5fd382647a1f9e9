"""Headless Chromium for the page's browser test, latency benchmark and screenshots: the
distribution's Chromium (``make browser``: ``apt-get install chromium``) driven by Playwright's Python
package, no browser download."""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

CHROMIUM = os.environ.get("DEFFILLER_CHROMIUM", "/usr/bin/chromium")
#: set (to anything but "" or 0) where the browser tests must run: a missing browser fails them instead of
#: skipping them (``.ci/run`` sets it)
REQUIRE_BROWSER_ENV = "DEFFILLER_REQUIRE_BROWSER"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_missing() -> str | None:
    """Why the browser cannot start (a sentence with the fix), or None when it can."""
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        return (f"Chromium not found at {CHROMIUM}: install it with `make browser` (Debian's package: "
                "`apt-get install chromium`), or point DEFFILLER_CHROMIUM at a Chromium executable")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright's Python package is missing: pip install -r requirements.txt"
    return None


def browser_required() -> bool:
    """Whether the environment asks for the browser tests to run (``DEFFILLER_REQUIRE_BROWSER``)."""
    return os.environ.get(REQUIRE_BROWSER_ENV, "").strip() not in ("", "0")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(playwright):
    """A headless Chromium browser from a started ``sync_playwright()``."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@contextmanager
def served_page(ckpt: Path, width: int, height: int, timeout_ms: int = 300_000) -> Iterator[tuple[Any, Any]]:
    """Serve the page for ``ckpt`` (CPU, outputs in a new temporary folder) on a free local port and
    open it in headless Chromium once its mask canvas is there: yields ``(demo, page)``."""
    from playwright.sync_api import sync_playwright

    from webapp.app import build_app

    demo = build_app(ckpt, Path(tempfile.mkdtemp(prefix="deffiller_page_")), device="cpu")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as pw:
            browser = launch(pw)
            try:
                page = browser.new_page(viewport={"width": width, "height": height})
                page.set_default_timeout(timeout_ms)
                page.goto(f"http://127.0.0.1:{port}/")
                page.wait_for_selector("#mask_canvas canvas")
                yield demo, page
            finally:
                browser.close()
    finally:
        demo.close()
