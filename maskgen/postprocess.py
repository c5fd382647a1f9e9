"""From the DDPM's continuous output to a clean binary mask at the target size.

threshold -> nearest-neighbour resize -> drop connected components below a minimum area. A mask
that comes out empty is re-drawn by the sampler; :func:`nonempty_fallback` is the last resort.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image
from scipy import ndimage

EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity, used for masks throughout maskgen


def binarize(soft: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """``soft`` in [-1, 1] (the model's scale) -> boolean mask; ``threshold`` is on the [0, 1] scale."""
    return (np.asarray(soft, dtype=np.float32) + 1.0) * 0.5 > threshold


def resize_nearest(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a boolean mask to ``size``×``size`` (stays exactly binary)."""
    if mask.shape == (size, size):
        return mask.copy()
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(img.resize((size, size), Image.NEAREST)) > 127


def min_pixels(min_area: float, shape: tuple[int, int]) -> int:
    """Smallest kept component in pixels for a minimum area given as a fraction of the image."""
    return max(1, math.ceil(float(min_area) * shape[0] * shape[1]))


def remove_specks(mask: np.ndarray, min_px: int) -> np.ndarray:
    """Drop 8-connected components with fewer than ``min_px`` pixels."""
    if min_px <= 1 or not mask.any():
        return mask.copy()
    labels, n = ndimage.label(mask, structure=EIGHT)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_px
    keep[0] = False
    return keep[labels]


def postprocess(soft: np.ndarray, size: int, threshold: float = 0.5, min_area: float = 5e-4) -> np.ndarray:
    """Threshold, resize (nearest) and de-speck one H×W model output; the result may be empty."""
    mask = resize_nearest(binarize(soft, threshold), size)
    return remove_specks(mask, min_pixels(min_area, mask.shape))


def nonempty_fallback(soft: np.ndarray, size: int, threshold: float = 0.5) -> np.ndarray:
    """A never-empty mask from an output whose cleaned mask was empty: its largest component at
    ``threshold`` or, when nothing passes the threshold, the component around its strongest pixel."""
    fg = binarize(soft, threshold)
    if not fg.any():
        soft = np.asarray(soft, dtype=np.float32)
        level = soft.max() - 0.1 * (soft.max() - soft.min())
        fg = soft >= level
    labels, n = ndimage.label(fg, structure=EIGHT)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    return resize_nearest(labels == int(np.argmax(sizes)), size)
