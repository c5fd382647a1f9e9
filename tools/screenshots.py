"""The README's screenshots of the page: drawing, result, kept pairs (small palette PNGs in docs/).

    python -m tools.screenshots --ckpt OUTPUT/demo/checkpoints/latest.safetensors --out docs
"""
from __future__ import annotations

import argparse
from io import BytesIO
from pathlib import Path
from typing import Optional

from PIL import Image

from dataset.io import write_png_atomic
from runtime.errors import run_cli


def save_small(png: bytes, path: Path, width: int = 900) -> None:
    """Downscale to ``width`` and store with a 128-colour palette (a few tens of kB)."""
    img = Image.open(BytesIO(png)).convert("RGB")
    img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    write_png_atomic(img.quantize(128, method=Image.Quantize.MEDIANCUT), path)


def stroke(pg, points: list[tuple[float, float]]) -> None:
    """A mouse stroke through ``points`` given as fractions of the canvas box."""
    box = pg.locator("#mask_canvas canvas").first.bounding_box()
    side = min(box["width"], box["height"]) * 0.8
    x0, y0 = box["x"] + box["width"] / 2 - side / 2, box["y"] + box["height"] / 2 - side / 2
    pg.mouse.move(x0 + points[0][0] * side, y0 + points[0][1] * side)
    pg.mouse.down()
    for (ax, ay), (bx, by) in zip(points, points[1:]):
        for k in range(1, 11):
            pg.mouse.move(x0 + side * (ax + (bx - ax) * k / 10), y0 + side * (ay + (by - ay) * k / 10))
    pg.mouse.up()


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", type=Path, required=True, help="DefFiller checkpoint (e.g. the CPU demo's)")
    p.add_argument("--out", type=Path, default=Path("docs"), help="folder for the PNGs (default docs)")
    args = p.parse_args(argv)

    from tools.browser import served_page

    args.out.mkdir(parents=True, exist_ok=True)
    with served_page(args.ckpt, 1280, 860) as (_, pg):
        stroke(pg, [(0.15, 0.25), (0.5, 0.35), (0.85, 0.5)])
        pg.get_by_label("scratches").check()
        pg.locator("#variants input[type=number]").fill("4")
        pg.locator("#variants input[type=number]").press("Enter")
        save_small(pg.screenshot(), args.out / "app_draw.png")
        pg.click("#generate")
        pg.wait_for_function("document.querySelectorAll('#results img').length == 4")
        save_small(pg.screenshot(), args.out / "app_result.png")
        for n, k in enumerate((0, 2, 3), start=1):
            pg.locator("#results img").nth(k).click()
            pg.click("#keep")
            pg.wait_for_function(f"document.querySelectorAll('#kept img').length == {n}")
        pg.click("#zip")
        pg.wait_for_selector("#zip_file a")
        pg.locator("#kept").scroll_into_view_if_needed()
        save_small(pg.screenshot(), args.out / "app_kept.png")
    print(f"wrote {args.out}/app_draw.png, app_result.png, app_kept.png")
    return 0


if __name__ == "__main__":
    run_cli(main)
