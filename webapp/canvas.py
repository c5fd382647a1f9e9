"""Mask canvas: the editor's value <-> a binary mask at the model's resolution.

The editor shows a black background ``canvas_side(res)`` pixels wide (an integer multiple of the
model's resolution, so a stroke covers whole model pixels) with a white brush; a model pixel is
in the mask when at least half of its block is painted.
"""
from __future__ import annotations

import math
from io import BytesIO
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image

from inference.jobs import mask_tensor
from inference.preview import outlined
from runtime.errors import UserError

DISPLAY = 384  # on-screen canvas side the editor is scaled to
RESULT_SIDE = 256  # generated images are shown enlarged to this side, mask outline drawn at it


def canvas_side(res: int) -> int:
    """Editor canvas side: the smallest multiple of ``res`` that is at least ``DISPLAY`` pixels."""
    return res * max(1, math.ceil(DISPLAY / res))


def editor_value(mask: Optional[np.ndarray], res: int) -> dict[str, Any]:
    """Editor value: black background, and ``mask`` (res x res bool) as a white layer the eraser can edit."""
    side = canvas_side(res)
    background = np.zeros((side, side, 3), np.uint8)
    if mask is None:
        return {"background": background, "layers": [], "composite": None}
    big = np.kron(mask.astype(np.uint8), np.ones((side // res, side // res), np.uint8)).astype(bool)
    layer = np.zeros((side, side, 4), np.uint8)
    layer[big] = 255
    composite = background.copy()
    composite[big] = 255
    return {"background": background, "layers": [layer], "composite": composite}


def mask_from_editor(value: Optional[dict[str, Any]], res: int) -> np.ndarray:
    """The drawn mask as a res x res bool array; nothing drawn or an empty mask is a :class:`UserError`."""
    composite = None if value is None else value.get("composite")
    if composite is None:
        raise UserError("no mask drawn: paint the defect with the brush on the black canvas, "
                        "or upload a mask PNG")
    grey = np.asarray(Image.fromarray(np.asarray(composite, np.uint8)).convert("L"), np.float32) / 255
    side = canvas_side(res)
    if grey.shape != (side, side):  # a canvas the page resized: area-resample to a whole multiple first
        grey = np.asarray(Image.fromarray((grey * 255).astype(np.uint8)).resize((side, side), Image.BOX),
                          np.float32) / 255
    k = side // res
    painted = (grey > 0.5).reshape(res, k, res, k).mean(axis=(1, 3))
    mask = painted >= 0.5
    if not mask.any():
        raise UserError("the mask is empty: paint a larger stroke (a model pixel counts when half of it "
                        "is painted) or upload a mask with white defect pixels")
    return mask


def mask_from_upload(path: str | Path, res: int) -> np.ndarray:
    """An uploaded mask file read as ``infer.py`` reads masks (centre crop, nearest resize to ``res``)."""
    mask = mask_tensor(Path(path), res).numpy()
    if not mask.any():
        raise UserError(f"{Path(path).name}: the mask has no white (defect) pixels; "
                        "upload a mask with 255 = defect, 0 = background")
    return mask


def _png(image: Image.Image) -> BytesIO:
    buf = BytesIO()
    image.save(buf, format="PNG")
    buf.seek(0)
    return buf


def to_pil(image01: torch.Tensor) -> Image.Image:
    """C x H x W image in [0, 1] (C = 1 or 3) as an 8-bit PIL image."""
    arr = (image01.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr[..., 0]) if arr.shape[-1] == 1 else Image.fromarray(arr)


def with_outline(image01: torch.Tensor, mask: np.ndarray, side: int = RESULT_SIDE) -> np.ndarray:
    """The image enlarged to ``side`` pixels with the mask's boundary drawn in red (``infer.py``'s preview)."""
    mask_img = Image.fromarray(mask.astype(np.uint8) * 255)
    return outlined(_png(to_pil(image01)), _png(mask_img), side)
