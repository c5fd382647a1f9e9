"""Reading images and binary masks, and writing files atomically.

Mask policy (``read_mask``):

* Accepted modes: 1-bit, grayscale (8/16/32-bit), palette, RGB/RGBA. Colour masks must have
  identical R, G and B channels (a grey mask saved as RGB); otherwise they are rejected, since a
  colour-coded label map is not a binary mask. An alpha channel is ignored.
* Values exactly within {0, 255} or {0, 1} (for 16-bit files also {0, 65535}) are read as they
  are: non-zero = defect. A mask that is entirely 0 is an empty (all-background) mask.
* Any other value set (anti-aliased edges, JPEG artefacts) is binarised at half the full range
  (>= 128 for 8-bit) and, with ``binarize="warn"`` (default), a warning names the file;
  ``binarize="error"`` raises :class:`UserError` instead, ``binarize="silent"`` does neither.
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from runtime.atomic import write_atomic
from runtime.errors import UserError, require_file

BINARIZE_MODES = ("warn", "error", "silent")


_UNREADABLE = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def _unreadable(path: Path, exc: BaseException) -> UserError:
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
        return UserError(f"{path}: image too large ({size}, above Pillow's decompression-bomb limit of "
                         f"{Image.MAX_IMAGE_PIXELS:,}); downscale or remove it")
    return UserError(f"{path}: cannot read image ({exc.__class__.__name__}); the file is "
                     "corrupt or not an image, replace or remove it")


def _check_file(path: Path) -> None:
    require_file(path, "image file", "check the dataset folder")


def open_image(path: str | Path, load: bool = True) -> Image.Image:
    """Open an image with Pillow; a missing, corrupt or oversized file raises a one-line :class:`UserError`.

    Pillow's decompression-bomb warning (more than ``Image.MAX_IMAGE_PIXELS`` pixels) is treated as
    an error, like its hard limit at twice that size. ``load=False`` reads only the header.
    """
    path = Path(path)
    _check_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            if load:
                img.load()
    except (*_UNREADABLE, Image.DecompressionBombWarning) as exc:
        raise _unreadable(path, exc) from None
    return img


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` from the image header (same checks as :func:`open_image`)."""
    with open_image(path, load=False) as img:
        return img.size


def _open_loaded(path: str | Path) -> Image.Image:
    return open_image(path, load=True)


def read_image(path: str | Path) -> Image.Image:
    """Load an image file as an RGB PIL image; unreadable files raise :class:`UserError`."""
    img = _open_loaded(path)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")


def _mask_values(img: Image.Image, path: Path) -> tuple[np.ndarray, int]:
    """Single-channel array of the mask and its full-scale value."""
    if img.mode == "1":
        return np.asarray(img, dtype=np.uint8), 1
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "PA"):
        img = img.getchannel(0)
    if img.mode in ("RGB", "RGBA", "RGBX"):
        arr = np.asarray(img)[..., :3]
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            raise UserError(f"{path}: colour mask with differing R/G/B channels; save the mask as "
                            "single-channel grayscale with 0 = background and 255 = defect")
        return arr[..., 0], 255
    if img.mode in ("L",):
        return np.asarray(img), 255
    if img.mode.startswith("I;16"):
        return np.asarray(img).astype(np.int64), 65535
    if img.mode in ("I", "F"):
        arr = np.asarray(img)
        return arr, 65535 if arr.max(initial=0) > 255 else 255
    raise UserError(f"{path}: unsupported mask mode {img.mode!r}; save the mask as 8-bit grayscale")


def read_mask(path: str | Path, binarize: str = "warn") -> np.ndarray:
    """Load a binary mask as a boolean (H, W) array (True = defect); see the module docstring."""
    if binarize not in BINARIZE_MODES:
        raise ValueError(f"binarize must be one of {BINARIZE_MODES}, got {binarize!r}")
    path = Path(path)
    arr, full = _mask_values(_open_loaded(path), path)
    values = np.unique(arr)
    allowed = ({0, 1}, {0, 255}, {0, full})
    if any(set(values.tolist()) <= ok for ok in allowed):
        return arr > 0
    shown = ", ".join(str(v) for v in values[:6]) + (", ..." if values.size > 6 else "")
    threshold = (full + 1) // 2
    if binarize == "error":
        raise UserError(f"{path}: mask is not binary (values {shown}); save it with only 0 and "
                        f"255, or allow binarisation at {threshold}")
    if binarize == "warn":
        warnings.warn(f"{path}: mask is not binary (values {shown}); binarising at {threshold}",
                      stacklevel=2)
    return arr >= threshold


def write_png_atomic(img: Image.Image, path: str | Path) -> Path:
    """Save ``img`` as PNG at ``path`` via a temporary file in the same folder + ``os.replace``."""
    return write_atomic(path, lambda fh: img.save(fh, format="PNG"), make_parents=False)


def write_json_atomic(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as indented UTF-8 JSON at ``path`` atomically."""
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    return write_atomic(path, lambda fh: fh.write(text.encode("utf-8")), make_parents=False)


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Parse a JSON file; a missing or malformed file raises a one-line :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found; check the path")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: {what} is not UTF-8 text; re-save it as UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: malformed {what} (line {exc.lineno}, column {exc.colno}: "
                        f"{exc.msg}); fix or regenerate it") from None
