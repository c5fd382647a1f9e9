"""Procedural steel-surface defects with exact masks, for CPU demos and tests (numpy only).

The background imitates hot-rolled strip steel: a grey level with low-frequency shading, streaks
along the rolling direction and fine sensor noise. Defects are drawn only inside their mask, so the
mask is exact:

* inclusion: one or two strings of small dark (sometimes light) elongated blobs along the rolling
  direction;
* patches: large irregular darker (sometimes lighter) mottled regions;
* scratches: one or two long thin bright or dark lines, straight or slightly curved, mostly along
  the rolling direction.

Everything is deterministic given ``seed``. ``orientation="vertical"`` rotates the rolling
direction to match most SD-Saliency-900 photographs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from runtime.errors import UserError
from runtime.seeds import procedural_seed

from .categories import Category, categories_from_config
from .files import IMAGE_DIRS, IMAGES_DIR, MASK_DIRS, MASKS_DIR
from .io import write_png_atomic
from .pairs import Pair, find_pairs
from .sem_dataset import check_dataset_args, image_to_tensor, make_item

SHAPE_CODES = {"inclusion": 1, "patches": 2, "scratches": 3}
ORIENTATIONS = ("horizontal", "vertical")
_MIN_PIXELS = 2


def _smooth(frac: np.ndarray) -> np.ndarray:
    return frac * frac * (3.0 - 2.0 * frac)


def _upsample(coarse: np.ndarray, h: int, w: int) -> np.ndarray:
    """Smooth (smoothstep-weighted bilinear) upsampling of a 2-D grid to (h, w)."""
    ch, cw = coarse.shape
    ys = np.linspace(0.0, ch - 1.0, h)
    xs = np.linspace(0.0, cw - 1.0, w)
    y0 = np.minimum(ys.astype(int), ch - 2) if ch > 1 else np.zeros(h, int)
    x0 = np.minimum(xs.astype(int), cw - 2) if cw > 1 else np.zeros(w, int)
    fy = _smooth(ys - y0)[:, None] if ch > 1 else np.zeros((h, 1))
    fx = _smooth(xs - x0)[None, :] if cw > 1 else np.zeros((1, w))
    y1, x1 = np.minimum(y0 + 1, ch - 1), np.minimum(x0 + 1, cw - 1)
    rows = coarse[y0] * (1.0 - fy) + coarse[y1] * fy
    return rows[:, x0] * (1.0 - fx) + rows[:, x1] * fx


def _noise(rng: np.random.Generator, h: int, w: int, cells_y: int, cells_x: int) -> np.ndarray:
    """Value noise with roughly unit variance and the given number of cells per axis."""
    return _upsample(rng.standard_normal((cells_y + 1, cells_x + 1)), h, w)


def _fractal(rng: np.random.Generator, size: int, cells: int, octaves: int = 3) -> np.ndarray:
    out = np.zeros((size, size))
    for octave in range(octaves):
        c = min(cells * 2 ** octave, size)
        out += _noise(rng, size, size, c, c) * 0.5 ** octave
    return out / np.sqrt(sum(0.25 ** o for o in range(octaves)))


def _box_blur(arr: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Moving average of width 2*radius+1 along ``axis`` (wrap-around borders)."""
    if radius < 1:
        return arr
    padded = np.concatenate([arr.take(range(-radius - 1, 0), axis), arr,
                             arr.take(range(radius), axis)], axis)
    csum = np.cumsum(padded, axis)
    n = arr.shape[axis]
    hi = csum.take(range(2 * radius + 1, 2 * radius + 1 + n), axis)
    lo = csum.take(range(n), axis)
    return (hi - lo) / (2 * radius + 1)


def _speckle(rng: np.random.Generator, size: int, radius: int) -> np.ndarray:
    """Isotropic blotchy noise (white noise box-blurred twice), unit standard deviation."""
    out = rng.standard_normal((size, size))
    for _ in range(2):
        out = _box_blur(_box_blur(out, radius, 0), radius, 1)
    return out / max(float(out.std()), 1e-9)


def _background(rng: np.random.Generator, size: int, mottled: bool) -> np.ndarray:
    """Rolled-steel texture with rolling streaks along x."""
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    img = np.full((size, size), rng.uniform(95.0, 165.0))
    img += rng.uniform(-14.0, 14.0) * (yy - 0.5) + rng.uniform(-10.0, 10.0) * (xx - 0.5)
    img += rng.uniform(5.0, 12.0) * _noise(rng, size, size, 2, 3)
    img += rng.uniform(2.5, 6.0) * _noise(rng, size, size, max(size // 3, 2), 3)
    img += rng.uniform(1.0, 3.0) * _noise(rng, size, size, max(size // 1, 2), 8)
    if mottled:
        img += rng.uniform(4.0, 9.0) * _speckle(rng, size, max(size // 40, 1))
        img += rng.uniform(3.0, 7.0) * rng.standard_normal((size, size))
    else:
        img += rng.uniform(1.5, 3.5) * rng.standard_normal((size, size))
    return img


def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    return yy, xx


def _inclusion(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Strings of small elongated blobs along the rolling direction."""
    size = img.shape[0]
    yy, xx = _coords(size)
    wobble = 1.0 + 0.25 * np.clip(_noise(rng, size, size, 6, 6), -1.2, 1.2)
    r2_min = np.full(img.shape, np.inf)
    for _ in range(1 if rng.random() < 0.7 else 2):
        cy, cx = rng.uniform(0.12, 0.88, 2) * size
        spread = rng.uniform(0.05, 0.35) * size
        for _ in range(int(rng.integers(2, 9))):
            by = np.clip(cy + rng.normal(0.0, 0.03 * size), 1.0, size - 1.0)
            bx = np.clip(cx + rng.uniform(-spread, spread), 1.0, size - 1.0)
            a = max(1.5, rng.uniform(0.03, 0.12) * size)
            b = max(0.9, rng.uniform(0.25, 0.55) * min(a, 0.045 * size + 0.9))
            ang = rng.normal(0.0, 0.12)
            dy, dx = yy - by, xx - bx
            u = (dx * np.cos(ang) + dy * np.sin(ang)) / a
            v = (-dx * np.sin(ang) + dy * np.cos(ang)) / b
            r2_min = np.minimum(r2_min, (u * u + v * v) * wobble)
    mask = r2_min <= 1.0
    depth = rng.uniform(40.0, 75.0) * (1.0 if rng.random() < 0.9 else -0.8)
    profile = 0.55 + 0.45 * np.clip(1.0 - r2_min, 0.0, 1.0)
    img -= np.where(mask, depth * profile, 0.0)
    return mask


def _patches(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """One to three large irregular mottled regions."""
    size = img.shape[0]
    yy, xx = _coords(size)
    envelope = np.zeros(img.shape)
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0.15, 0.85, 2) * size
        ry, rx = rng.uniform(0.12, 0.32, 2) * size
        envelope = np.maximum(envelope, np.exp(-((yy - cy) / ry) ** 2 - ((xx - cx) / rx) ** 2))
    field = envelope + 0.3 * _fractal(rng, size, 3, 3)
    threshold = min(0.55, float(np.quantile(field, 1.0 - 0.03)))
    mask = field > threshold
    span = min(0.25, float(field.max()) - threshold)
    ramp = np.clip((field - threshold) / max(span, 1e-6), 0.0, 1.0)
    mottle = 0.8 + 0.2 * np.clip(_speckle(rng, size, max(size // 25, 1)), -2.0, 2.0)
    depth = rng.uniform(45.0, 80.0) * (1.0 if rng.random() < 0.8 else -0.9)
    img -= np.where(mask, depth * (0.6 + 0.4 * ramp) * mottle, 0.0)
    img += np.where(mask, rng.uniform(2.0, 6.0) * rng.standard_normal(img.shape), 0.0)
    return mask


def _scratches(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """One or two long thin lines, straight or gently curved, with tapered ends."""
    size = img.shape[0]
    yy, xx = _coords(size)
    mask = np.zeros(img.shape, bool)
    shade = np.zeros(img.shape)
    for _ in range(1 if rng.random() < 0.8 else 2):
        if rng.random() < 0.65:
            angle = rng.normal(0.0, 0.07) + (np.pi if rng.random() < 0.5 else 0.0)
        else:
            angle = rng.uniform(0.0, np.pi)
        cy, cx = rng.uniform(0.15, 0.85, 2) * size
        half = rng.uniform(0.25, 0.75) * size
        # (t, v): position along the chord in [-1, 1] and signed offset across it, in pixels.
        t = ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) / half
        v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        offset = rng.uniform(-0.06, 0.06) * size * t * t
        offset += rng.uniform(0.0, 0.6) * np.sin(rng.uniform(2.0, 6.0) * t + rng.uniform(0, 6.3))
        half_w = 0.5 * max(1.2, rng.uniform(0.015, 0.07) * size)
        half_w *= 1.0 + 0.25 * np.sin(rng.uniform(3.0, 9.0) * t + rng.uniform(0, 6.3))
        taper = np.sqrt(np.clip((1.0 - np.abs(t)) * half / (4.0 * half_w), 0.0, 1.0))
        half_w = np.maximum(0.6, half_w * taper)
        rel = np.abs(v - offset) / half_w
        inside = (rel <= 1.0) & (np.abs(t) <= 1.0)
        depth = rng.uniform(45.0, 95.0) if rng.random() < 0.75 else -rng.uniform(30.0, 60.0)
        shade = np.where(inside, depth * (0.65 + 0.35 * (1.0 - rel ** 2)), shade)
        mask |= inside
    img += shade
    return mask


_DRAW: dict[str, Callable[[np.random.Generator, np.ndarray], np.ndarray]] = {
    "inclusion": _inclusion, "patches": _patches, "scratches": _scratches,
}
_PREFIXES = {"in": "inclusion", "pa": "patches", "sc": "scratches"}


def _shape_name(category_name: str) -> str:
    key = str(category_name).lower()
    key = _PREFIXES.get(key, key)
    if key not in _DRAW:
        raise UserError(f"procedural generator: unknown defect type {category_name!r}; supported: "
                        f"{', '.join(_DRAW)}")
    return key


def generate_pair(category_name: str, size: int, seed: int,
                  orientation: str = "horizontal") -> tuple[Image.Image, np.ndarray]:
    """One grayscale defect image ('L') and its exact boolean mask, deterministic by ``seed``."""
    shape = _shape_name(category_name)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise UserError(f"procedural generator: size must be an integer >= 8, got {size!r}")
    if orientation not in ORIENTATIONS:
        raise UserError(f"procedural generator: orientation must be one of {ORIENTATIONS}")
    if int(seed) < 0:
        raise UserError(f"procedural generator: seed must be >= 0, got {seed}")
    rng = np.random.default_rng([int(seed), SHAPE_CODES[shape]])
    for _ in range(8):
        img = _background(rng, int(size), mottled=shape == "patches")
        mask = _DRAW[shape](rng, img)
        if int(mask.sum()) >= _MIN_PIXELS:
            break
    else:  # pragma: no cover - the drawers guarantee a few pixels in practice
        raise RuntimeError("procedural generator failed to place a defect")
    pixels = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    if orientation == "vertical":
        pixels, mask = pixels.T.copy(), mask.T.copy()
    return Image.fromarray(pixels, "L"), mask


sample_seed = procedural_seed  # seed of sample ``number`` (1-based) of a category (runtime.seeds)


def _procedural_categories(categories: Any) -> list[Category]:
    cats = categories_from_config(categories)
    for cat in cats:
        _shape_name(cat.name)
    return cats


def write_procedural_dataset(root: str | Path, n_per_category: int, size: int = 64, seed: int = 0,
                             categories: Any = None, overwrite: bool = False,
                             orientation: str = "horizontal") -> list[Pair]:
    """Write ``Source_Images/<prefix>_<n>.png`` and ``Ground_truth/<prefix>_<n>.png`` under ``root``.

    Refuses to write into non-empty image/mask folders unless ``overwrite`` (which replaces files
    of the same name and leaves others). Returns the dataset's pairs as ``find_pairs`` reads them.
    """
    if isinstance(n_per_category, bool) or not isinstance(n_per_category, int) or n_per_category < 1:
        raise UserError(f"n_per_category must be a positive integer, got {n_per_category!r}")
    cats = _procedural_categories(categories)
    root = Path(root)
    img_dir, mask_dir = root / IMAGES_DIR, root / MASKS_DIR
    for other in (root / IMAGE_DIRS[0], root / MASK_DIRS[0]):
        if other.exists():
            raise UserError(f"{other}: exists; write the procedural dataset to a fresh folder")
    for folder in (img_dir, mask_dir):
        if folder.is_dir() and any(folder.iterdir()) and not overwrite:
            raise UserError(f"{folder}: not empty; choose a fresh folder or pass overwrite=True")
        folder.mkdir(parents=True, exist_ok=True)
    for cat in cats:
        for number in range(1, n_per_category + 1):
            img, mask = generate_pair(cat.name, size, sample_seed(seed, cat.index, number),
                                      orientation)
            name = f"{cat.prefix}_{number}.png"
            write_png_atomic(img, img_dir / name)
            write_png_atomic(Image.fromarray(mask.astype(np.uint8) * 255, "L"), mask_dir / name)
    return find_pairs(root, cats)


class ProceduralDefectDataset(Dataset):
    """On-the-fly procedural samples with the same item dict as ``SemanticMaskDataset``.

    Item ``i`` is sample ``i // n_categories + 1`` of category ``i % n_categories`` and equals the
    file :func:`write_procedural_dataset` writes for it (with the same seed and size).
    """

    def __init__(self, n_per_category: int, image_size: int = 64, seed: int = 0,
                 categories: Any = None, in_dim: int = 152, prob_use_caption: float = 1.0,
                 orientation: str = "horizontal") -> None:
        self.categories = _procedural_categories(categories)
        check_dataset_args(self.categories, image_size, in_dim, prob_use_caption)
        if isinstance(n_per_category, bool) or not isinstance(n_per_category, int) or n_per_category < 1:
            raise UserError(f"n_per_category must be a positive integer, got {n_per_category!r}")
        if orientation not in ORIENTATIONS:
            raise UserError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
        self.n_per_category = n_per_category
        self.image_size = image_size
        self.seed = int(seed)
        self.in_dim = in_dim
        self.prob_use_caption = float(prob_use_caption)
        self.orientation = orientation

    def __len__(self) -> int:
        return self.n_per_category * len(self.categories)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index %= len(self)
        cat = self.categories[index % len(self.categories)]
        number = index // len(self.categories) + 1
        img, mask = generate_pair(cat.name, self.image_size,
                                  sample_seed(self.seed, cat.index, number), self.orientation)
        return make_item(image_to_tensor(img), torch.from_numpy(mask), cat,
                         f"{cat.prefix}_{number}", self.in_dim, self.prob_use_caption)
