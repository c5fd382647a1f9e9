"""From the DDPM's continuous output to a clean binary mask at the target size.

resize the soft output (bilinear by default) -> threshold, or hysteresis between a low and a high
level -> drop connected components below a minimum area. A mask that comes out empty is re-drawn by
the sampler; :func:`nonempty_fallback` is the last resort.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity, used for masks throughout maskgen
UPSAMPLING = ("nearest", "bilinear", "bicubic")


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


def resize_soft(soft: np.ndarray, size: int, mode: str = "bilinear") -> np.ndarray:
    """An H×W model output resized to ``size``×``size`` (``mode``: one of :data:`UPSAMPLING`)."""
    if mode not in UPSAMPLING:
        raise ValueError(f"upsampling must be one of {', '.join(UPSAMPLING)}, got {mode!r}")
    x = torch.from_numpy(np.asarray(soft, dtype=np.float32))[None, None]
    if x.shape[-2:] == (size, size):
        return x[0, 0].numpy().copy()
    kw = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(x, size=(size, size), mode=mode, **kw)[0, 0].numpy()


def hysteresis(prob: np.ndarray, high: float, low: float) -> np.ndarray:
    """Pixels above ``low`` that are 8-connected to a pixel above ``high``."""
    strong = prob > high
    labels, n = ndimage.label(prob > low, structure=EIGHT)
    keep = np.zeros(n + 1, dtype=bool)
    keep[np.unique(labels[strong])] = True
    keep[0] = False
    return keep[labels]


def binarize_prob(prob: np.ndarray, threshold: float, low_threshold: float | None, min_px: int) -> np.ndarray:
    """A resized output on the [0, 1] scale -> de-specked mask: ``prob > threshold``, or hysteresis down
    to ``low_threshold`` when that lies below the threshold."""
    if low_threshold is None or low_threshold >= threshold:
        mask = prob > threshold
    else:
        mask = hysteresis(prob, threshold, low_threshold)
    return remove_specks(mask, min_px)


def postprocess(soft: np.ndarray, size: int, threshold: float = 0.5, min_area: float = 5e-4,
                low_threshold: float | None = None, upsample: str = "bilinear") -> np.ndarray:
    """Resize one H×W model output, binarise it (``threshold``, or hysteresis down to
    ``low_threshold``; both on the [0, 1] scale) and de-speck it; the result may be empty."""
    prob = (resize_soft(soft, size, upsample) + 1.0) * 0.5
    return binarize_prob(prob, threshold, low_threshold, min_pixels(min_area, prob.shape))


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
