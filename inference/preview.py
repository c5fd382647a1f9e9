"""``preview.png``: a contact sheet of the first generated pairs, each image with its mask outlined in
red, so a run can be judged at a glance before training on it."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageFilter

from dataset.files import IMAGES_DIR, MASKS_DIR
from dataset.io import write_png_atomic

OUTLINE = np.array([255, 40, 40], dtype=np.uint8)


def outlined(image_path: Path, mask_path: Path, thumb: int) -> np.ndarray:
    """thumb x thumb x 3: the image with the mask's boundary pixels painted red."""
    image = Image.open(image_path).convert("RGB").resize((thumb, thumb), Image.BICUBIC)
    mask = Image.open(mask_path).convert("L").resize((thumb, thumb), Image.NEAREST)
    inside = np.asarray(mask) > 127
    eroded = np.asarray(mask.filter(ImageFilter.MinFilter(3))) > 127
    arr = np.array(image)
    arr[inside & ~eroded] = OUTLINE
    return arr


def write_preview(root: Path, names: Sequence[str], max_items: int = 24, cols: int = 6, thumb: int = 160,
                  gap: int = 4) -> Path | None:
    """Tile the first ``max_items`` of ``names`` that exist under ``root`` into ``root/preview.png``
    (written atomically); None when there is nothing to show."""
    names = [n for n in names
             if (root / IMAGES_DIR / f"{n}.png").is_file() and (root / MASKS_DIR / f"{n}.png").is_file()]
    names = names[:max_items]
    if not names:
        return None
    cols = min(cols, len(names))
    rows = -(-len(names) // cols)
    sheet = np.full((rows * (thumb + gap) + gap, cols * (thumb + gap) + gap, 3), 255, np.uint8)
    for k, name in enumerate(names):
        y, x = gap + (k // cols) * (thumb + gap), gap + (k % cols) * (thumb + gap)
        sheet[y:y + thumb, x:x + thumb] = outlined(root / IMAGES_DIR / f"{name}.png",
                                                   root / MASKS_DIR / f"{name}.png", thumb)
    return write_png_atomic(Image.fromarray(sheet), root / "preview.png")
