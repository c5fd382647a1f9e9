"""Sample grids written during training: one row per example, columns mask | real | generated."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

# defect class -> colour in the mask column (class 0, background, is black)
PALETTE = np.array([[0, 0, 0], [255, 80, 80], [80, 220, 80], [90, 140, 255], [240, 200, 60],
                    [220, 90, 220], [70, 220, 220], [255, 255, 255]], dtype=np.uint8)
GAP = 2
MIN_CELL = 128  # small demo images are enlarged (nearest neighbour) so the grid is readable


def mask_image(sem: torch.Tensor) -> np.ndarray:
    """One-hot map (C x H x W) -> H x W x 3 uint8, a colour per class."""
    labels = sem.argmax(0).cpu().numpy()
    colours = PALETTE[np.where(labels > 0, (labels - 1) % (len(PALETTE) - 1) + 1, 0)]
    return colours.astype(np.uint8)


def to_uint8(image01: torch.Tensor, size: int) -> np.ndarray:
    """3 x h x w in [0, 1] -> size x size x 3 uint8 (resized when the decoder's size differs)."""
    arr = (image01.detach().float().clamp(0, 1).cpu().permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    if arr.shape[0] != size:
        arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.BICUBIC))
    return arr


def _enlarge(cell: np.ndarray, factor: int) -> np.ndarray:
    return cell.repeat(factor, 0).repeat(factor, 1) if factor > 1 else cell


def compose(sem: torch.Tensor, real: torch.Tensor, generated: torch.Tensor) -> Image.Image:
    """Grid image: rows = examples; ``real`` in [-1, 1], ``generated`` in [0, 1]."""
    b, size = sem.shape[0], sem.shape[-1]
    factor = max(1, -(-MIN_CELL // size))
    rows = []
    for i in range(b):
        cells = [_enlarge(c, factor) for c in (mask_image(sem[i]), to_uint8((real[i] + 1) / 2, size),
                                                to_uint8(generated[i], size))]
        gap = np.full((size * factor, GAP, 3), 255, np.uint8)
        rows.append(np.concatenate([cells[0], gap, cells[1], gap, cells[2]], axis=1))
        if i != b - 1:
            rows.append(np.full((GAP, rows[-1].shape[1], 3), 255, np.uint8))
    return Image.fromarray(np.concatenate(rows, axis=0))


def write_grid(path: Path, sem: torch.Tensor, real: torch.Tensor, generated: torch.Tensor,
               captions: Sequence[str]) -> Path:
    """PNG grid plus a caption list next to it, both written atomically."""
    from dataset import write_png_atomic
    from runtime.atomic import write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_png_atomic(compose(sem, real, generated), path)
    text = "".join(f"row {i}: {c!r}\n" for i, c in enumerate(captions))
    write_text_atomic("columns: mask | real | generated\n" + text, path.with_suffix(".txt"))
    return path
