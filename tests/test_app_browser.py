"""app.py in a real headless browser: draw a mask with the mouse, generate, keep; implant; bad input.

Chromium comes from the distribution (``make browser``: ``apt-get install chromium``, ``/usr/bin/chromium``),
driven by Playwright's Python package through that executable (no browser download). Without it these tests
are skipped with the command that enables them, unless ``DEFFILLER_REQUIRE_BROWSER=1`` (``.ci/run``) makes a
missing browser a failure. The app runs in this process on 127.0.0.1 with a free port and a tiny random
checkpoint.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tools import browser as browser_tools
from tools.browser import REQUIRE_BROWSER_ENV, browser_required, chromium_missing, free_port, launch

WAIT_MS = 60_000


@pytest.fixture(scope="module")
def browser():
    problem = chromium_missing()
    if problem and browser_required():
        pytest.fail(f"{problem} ({REQUIRE_BROWSER_ENV} is set: the browser tests must run)")
    if problem:
        pytest.skip(f"browser test skipped: {problem}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from tools.tiny_model import make_tiny_checkpoint
    from webapp import app

    root = tmp_path_factory.mktemp("app")
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is faster, much faster on a busy machine
    ckpt = make_tiny_checkpoint(root / "tiny.safetensors")
    demo = app.build_app(ckpt, root / "out", device="cpu")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                allowed_paths=[str(root / "out")])
    yield {"url": f"http://127.0.0.1:{port}/", "root": root, "kept": root / "out" / "kept"}
    demo.close()
    torch.set_num_threads(old)


@pytest.fixture
def page(browser, served):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(WAIT_MS)
    pg.goto(served["url"])
    pg.wait_for_selector("#mask_canvas canvas")
    pg.locator("#steps input[type=number]").fill("3")
    pg.locator("#steps input[type=number]").press("Enter")
    yield pg
    context.close()


def draw_stroke(pg) -> None:
    box = pg.locator("#mask_canvas canvas").first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    pg.mouse.move(cx - 60, cy - 20)
    pg.mouse.down()
    for k in range(7):  # each move repaints the editor (about 0.25 s headless), so few long segments
        pg.mouse.move(cx - 60 + 20 * k, cy - 20 + 7 * k)
    pg.mouse.up()


def upload_mask(pg, path: Path) -> None:
    """Through the file chooser that the 'Upload mask PNG' button opens, as a person would."""
    with pg.expect_file_chooser() as chooser:
        pg.click("#upload_mask")
    chooser.value.set_files(str(path))


def mask_source(pg) -> str:
    return pg.locator("#mask_source input, #mask_source textarea").first.input_value()


def upload_image(pg, path: Path) -> None:
    """Background / start image; Generate only after the upload has reached the server."""
    pg.locator("#background input[type=file]").set_input_files(str(path))
    pg.locator("#background img").first.wait_for()


def shown_images(pg) -> int:
    return pg.locator("#results img").count()


def test_draw_generate_keep(page, served):
    pg = page
    draw_stroke(pg)
    pg.get_by_label("scratches").check()
    pg.click("#generate")
    pg.wait_for_function("document.querySelectorAll('#results img').length == 2")
    assert "2 image(s) in" in pg.locator("#timing").inner_text()
    # decoded, not merely inserted (a loaded machine may take a moment); a broken image never gets there
    pg.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")
    pg.locator("#results img").nth(1).click()  # choose the second variant
    pg.click("#keep")
    pg.wait_for_selector("#kept img")
    assert "Sc_app_0001" in pg.locator("#kept_note").inner_text()

    kept = served["kept"]
    record = json.loads((kept / "generation.json").read_text())
    entry = record["images"]["Sc_app_0001"]
    assert {"mask", "category", "prompt", "seed", "sampler", "steps", "guidance_scale"} <= set(entry)
    assert (entry["category"], entry["seed"], entry["steps"], entry["mode"]) == ("scratches", 1, 3, "generate")
    assert len(record["settings"]["checkpoint_sha256"]) == 64
    mask = np.asarray(Image.open(kept / "Ground_truth" / "Sc_app_0001.png"))
    image = Image.open(kept / "Source_Images" / "Sc_app_0001.png")
    assert image.size == mask.shape[::-1] and 0 < (mask > 127).mean() < 0.5  # the stroke, not the canvas

    pg.click("#zip")
    pg.wait_for_selector("#zip_file a")
    assert pg.locator("#zip_file a").first.get_attribute("href").endswith("kept.zip")


def test_implant_keeps_background_outside_the_mask(page, served, tmp_path):
    pg = page
    rng = np.random.default_rng(0)
    background = tmp_path / "plate.png"
    Image.fromarray(rng.integers(60, 200, (32, 32, 3), dtype=np.uint8)).save(background)
    mask = np.zeros((32, 32), np.uint8)
    mask[12:18, 10:20] = 255
    Image.fromarray(mask).save(tmp_path / "In_mask.png")
    upload_mask(pg, tmp_path / "In_mask.png")
    pg.wait_for_function("document.querySelector('#mask_source textarea, #mask_source input').value"
                         ".includes('In_mask.png')")
    pg.get_by_label("inclusion").check()
    pg.get_by_label("implant into a background image").check()
    upload_image(pg, background)
    pg.locator("#variants input[type=number]").fill("1")
    pg.locator("#variants input[type=number]").press("Enter")
    pg.click("#generate")
    pg.wait_for_function("document.querySelectorAll('#results img').length == 1")
    pg.click("#keep")
    pg.wait_for_function("document.querySelector('#kept_note').innerText.includes('In_app_')")
    name = pg.locator("#kept_note strong").inner_text()
    kept = served["kept"]
    entry = json.loads((kept / "generation.json").read_text())["images"][name]
    assert entry["mode"] == "implant" and entry["background"] == "plate.png"
    assert entry["mask"] == "upload In_mask.png"
    assert np.array_equal(np.asarray(Image.open(kept / "Ground_truth" / f"{name}.png")) > 127, mask > 127)
    out = np.asarray(Image.open(kept / "Source_Images" / f"{name}.png").convert("RGB")).astype(int)
    far = np.ones((32, 32), bool)
    far[12 - 6:18 + 6, 10 - 6:20 + 6] = False  # outside the mask dilated by 4 px and the 2 px feather
    assert np.abs(out[far] - np.asarray(Image.open(background)).astype(int)[far]).max() <= 1
    assert np.abs(out[14:16, 12:18] - np.asarray(Image.open(background)).astype(int)[14:16, 12:18]).mean() > 1


def test_bad_input_shows_a_message_and_the_app_keeps_serving(page, served, tmp_path):
    pg = page
    pg.get_by_label("patches").check()
    pg.click("#generate")  # nothing drawn
    pg.get_by_text("no mask drawn").first.wait_for()
    junk = tmp_path / "broken.png"
    junk.write_bytes(b"\x89PNG not really")
    upload_mask(pg, junk)
    # the note beside the canvas is written when the failed request ends: the canvas takes strokes again
    pg.wait_for_function("document.querySelector('#mask_note').innerText.includes('cannot read image')")
    assert mask_source(pg) == "canvas"
    draw_stroke(pg)
    pg.get_by_label("implant into a background image").check()
    wide = tmp_path / "wide.png"
    Image.fromarray(np.full((32, 48, 3), 128, np.uint8)).save(wide)
    upload_image(pg, wide)
    pg.click("#generate")
    pg.get_by_text("crop it to a square").first.wait_for()
    assert shown_images(pg) == 0
    pg.get_by_label("generate a defect").check()
    pg.click("#generate")  # the same page still works after three failed requests
    pg.wait_for_function("document.querySelectorAll('#results img').length == 2")


def test_browser_required_reads_the_environment(monkeypatch):
    for value, required in (("", False), ("0", False), ("1", True), ("yes", True)):
        monkeypatch.setenv(REQUIRE_BROWSER_ENV, value)
        assert browser_required() is required
    monkeypatch.delenv(REQUIRE_BROWSER_ENV)
    assert browser_required() is False


class FakeMachine:
    """A runner that records commands and makes Chromium appear when a given command succeeds."""

    def __init__(self, monkeypatch, works: str | None):
        self.calls: list[list[str]] = []
        self.works, self.present = works, None
        monkeypatch.setattr(browser_tools, "find_chromium", lambda: self.present)

    def __call__(self, cmd: list[str]) -> int:
        self.calls.append(cmd)
        kind = "playwright" if "playwright" in cmd else "apt-" + cmd[1]
        if kind == self.works:
            self.present = "/opt/chromium"
        return 0 if kind in (self.works, "apt-update") else 1


@pytest.mark.parametrize("works, is_root, expect, tried", [
    ("playwright", False, "downloaded by Playwright", 1),
    ("apt-install", True, "Debian's package", 3),  # Playwright fails; apt-get update + install
    ("apt-install", False, "will be skipped", 1),  # not root: apt-get is never tried
    (None, True, "will be skipped", 3),
])
def test_provision_tries_playwright_then_debian_then_says_how(monkeypatch, works, is_root, expect, tried):
    machine = FakeMachine(monkeypatch, works)
    line = browser_tools.provision(run=machine, is_root=is_root, apt_get="/usr/bin/apt-get")
    assert expect in line and len(machine.calls) == tried
    assert machine.calls[0][-3:] == ["playwright", "install", "chromium"]
    if "skipped" in line:
        assert "`make browser`" in line


def test_provision_leaves_an_installed_browser_alone(monkeypatch):
    machine = FakeMachine(monkeypatch, None)
    machine.present = "/usr/bin/chromium"
    assert browser_tools.provision(run=machine, is_root=True, apt_get="/usr/bin/apt-get").endswith("/usr/bin/chromium")
    assert machine.calls == []


def test_provision_command_exits_0_without_a_browser(monkeypatch, capsys):
    monkeypatch.setattr(browser_tools, "provision", lambda: "browser tests will be skipped: ...")
    monkeypatch.setattr(browser_tools, "chromium_missing", lambda: "Chromium not found at /x: ...")
    assert browser_tools.main(["provision"]) == 0
    assert browser_tools.main(["check"]) == 1
    assert "will be skipped" in capsys.readouterr().out
