"""Contact sheets of image files (grids with titled columns) for reports and cards."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from dataset.io import write_png_atomic


def font(size: int = 14) -> ImageFont.ImageFont:
    """Pillow's default font at ``size`` where Pillow can scale it."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def thumb_of(path: Path, size: int) -> Image.Image:
    """The image file as an RGB ``size`` x ``size`` thumbnail (nearest neighbour for 1-bit masks)."""
    with Image.open(path) as img:
        return img.convert("RGB").resize((size, size), Image.BICUBIC if img.mode != "1" else Image.NEAREST)


def picture_grid(rows: Sequence[Sequence[Path]], titles: Sequence[str], path: Path, thumb: int = 128,
                 gap: int = 4, head: int = 22) -> Path:
    """A grid of image files, one row per entry of ``rows``, columns titled by ``titles``."""
    cols = max(len(r) for r in rows)
    sheet = Image.new("RGB", (gap + cols * (thumb + gap), head + gap + len(rows) * (thumb + gap)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    title_font = font()
    for c, title in enumerate(titles):
        draw.text((gap + c * (thumb + gap) + 4, 3), title, fill=(0, 0, 0), font=title_font)
    for r, row in enumerate(rows):
        for c, file in enumerate(row):
            sheet.paste(thumb_of(file, thumb), (gap + c * (thumb + gap), head + gap + r * (thumb + gap)))
    return write_png_atomic(sheet, path)
