"""Headless Chromium for the page's browser test, latency benchmark and screenshots, driven by Playwright's
Python package: the configured executable (``DEFFILLER_CHROMIUM``, by default Debian's ``/usr/bin/chromium``
from ``make browser``) or, where that is missing, a Chromium that Playwright downloaded
(``python -m playwright install chromium``). ``python -m tools.browser provision`` (run by ``make test``)
gets one where this machine allows and otherwise says which command enables the browser tests."""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

CHROMIUM = os.environ.get("DEFFILLER_CHROMIUM", "/usr/bin/chromium")
#: set (to anything but "" or 0) where the browser tests must run: a missing browser fails them instead of
#: skipping them (``.ci/run`` sets it)
REQUIRE_BROWSER_ENV = "DEFFILLER_REQUIRE_BROWSER"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ENABLE_COMMAND = "make browser"


def _executable(path: str) -> bool:
    return Path(path).is_file() and os.access(path, os.X_OK) or bool(shutil.which(path))


def playwright_chromium() -> str | None:
    """The Chromium that Playwright downloaded, or None (none downloaded, or no Playwright package)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    try:
        with sync_playwright() as pw:
            path = pw.chromium.executable_path
    except Exception:  # a broken Playwright install: as if it had no browser
        return None
    return path if path and _executable(path) else None


def find_chromium() -> str | None:
    """The Chromium the browser tests use: ``CHROMIUM`` where it exists, else Playwright's download."""
    return CHROMIUM if _executable(CHROMIUM) else playwright_chromium()


def chromium_missing() -> str | None:
    """Why the browser cannot start (a sentence with the fix), or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright's Python package is missing: pip install -r requirements.txt"
    if find_chromium() is None:
        return (f"Chromium not found at {CHROMIUM}: install it with `{ENABLE_COMMAND}` (Debian's package: "
                "`apt-get install chromium`), or point DEFFILLER_CHROMIUM at a Chromium executable")
    return None


Runner = Callable[[list[str]], int]


def _run_quietly(cmd: list[str]) -> int:
    try:
        return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900).returncode
    except (OSError, subprocess.TimeoutExpired):
        return 1


def provision(run: Runner = _run_quietly, is_root: bool | None = None, apt_get: str | None = None) -> str:
    """Make a Chromium available for the browser tests where this machine allows, in this order: the one
    already there; Playwright's own download (where its servers are reachable); Debian's package (as root,
    where ``apt-get`` exists). Never raises; returns one line saying which, or that the browser tests will
    be skipped and the command that enables them."""
    found = find_chromium()
    if found:
        return f"browser tests: Chromium at {found}"
    if run([sys.executable, "-m", "playwright", "install", "chromium"]) == 0 and (found := find_chromium()):
        return f"browser tests: Chromium downloaded by Playwright, {found}"
    is_root = (os.geteuid() == 0) if is_root is None else is_root
    apt_get = apt_get if apt_get is not None else shutil.which("apt-get")
    if is_root and apt_get:
        if run([apt_get, "update", "-qq"]) == 0 and run([apt_get, "install", "-y", "-qq", "chromium"]) == 0 \
                and (found := find_chromium()):
            return f"browser tests: Chromium installed from Debian's package, {found}"
    return (f"browser tests will be skipped: no Chromium at {CHROMIUM}, and neither Playwright's download nor "
            f"Debian's package (root only) gave one here; enable them with `{ENABLE_COMMAND}` (or point "
            "DEFFILLER_CHROMIUM at a Chromium executable)")


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
    return playwright.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.browser",
                                     description="Chromium for the browser tests (tests/test_app_browser.py).")
    parser.add_argument("action", choices=["provision", "check"],
                        help="provision: get a Chromium where this machine allows (never fails); "
                             "check: say whether the browser tests can run (exit 1 when not)")
    args = parser.parse_args(argv)
    if args.action == "provision":
        print(provision())
        return 0
    problem = chromium_missing()
    print(problem or f"browser tests: Chromium at {find_chromium()}")
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main())
