"""Reading the three image sets of the realism card: real pairs, generated pairs, training images."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from dataset.categories import Category
from dataset.files import IMAGE_EXTS, MASK_EXTS, list_by_stem
from dataset.folders import (
    MaskReader,
    category_of,
    image_folder,
    mask_folder,
    match_by_stem,
    read_gray,
)
from dataset.splits import pick_split_files
from runtime.errors import UserError

OVERALL = "overall"


@dataclass
class ImageSet:
    """Images of one folder (native size, uint8 grey), their stems, categories and, for pairs, masks."""

    root: Path
    what: str
    stems: list[str]
    categories: list[str]
    images: list[np.ndarray] = field(default_factory=list)
    masks: list[Optional[np.ndarray]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    mask_files: list[Optional[Path]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.stems)


def list_set(root: str | Path, what: str, categories: Sequence[Category], stems: Optional[Sequence[str]] = None,
             with_masks: bool = True) -> ImageSet:
    """List (without reading) the images of ``root`` and, with ``with_masks``, their masks matched by stem."""
    root = Path(root)
    images = list_by_stem(image_folder(root), IMAGE_EXTS, f"{what} image", strict=False)
    if stems is not None:
        images = pick_split_files(images, stems, root, f"{what} image")
    masks: dict[str, Path] = {}
    if with_masks:
        if mask_folder(root) == root != image_folder(root):
            raise UserError(f"{root}: no Ground_truth/ (or 'Ground truth/') mask folder beside "
                            f"{image_folder(root).name}/; put the {what} masks there")
        masks = list_by_stem(mask_folder(root), MASK_EXTS, f"{what} mask", strict=False)
        if stems is not None:  # the split's masks only: the rest are not missing an image, they are not used
            masks = {s: masks[s] for s in stems if s in masks}
        try:
            keep = match_by_stem(images, masks, f"{what} image", f"{what} mask").stems
        except UserError as exc:
            raise UserError(f"{root}: {exc}; put the masks in Ground_truth/ with the images' names") from None
    else:
        keep = list(images)
    return ImageSet(root, what, keep, [category_of(s, categories) for s in keep],
                    files=[images[s] for s in keep], mask_files=[masks.get(s) for s in keep])


def attach_masks(image_set: ImageSet) -> ImageSet:
    """Give the listed images the masks of the same name in ``root``'s ``Ground_truth/`` (or ``Ground truth/``)
    where there are any; images without one keep none and stay in the set."""
    folder = mask_folder(image_set.root)
    if folder != image_set.root:
        masks = list_by_stem(folder, MASK_EXTS, f"{image_set.what} mask", strict=False)
        image_set.mask_files = [masks.get(s) for s in image_set.stems]
    return image_set


def read_set(image_set: ImageSet) -> ImageSet:
    """Read the listed images (grey, native size) and masks; unreadable files raise :class:`UserError`."""
    reader = MaskReader()
    for path, mask_path in tqdm(list(zip(image_set.files, image_set.mask_files)), desc=f"read {image_set.what}",
                                unit="img", leave=False, disable=None):
        image = read_gray(path)
        mask = reader(mask_path) if mask_path is not None else None
        if mask is not None and mask.shape != image.shape:
            raise UserError(f"{path}: image {image.shape[::-1]} and mask {mask.shape[::-1]} differ in size; "
                            "write masks at the image size")
        image_set.images.append(image)
        image_set.masks.append(mask)
    reader.report(what=f"{image_set.what} mask")
    return image_set


def check_categories(real: ImageSet, generated: ImageSet) -> None:
    """Every category of ``generated`` must have real images to compare with."""
    absent = sorted(set(generated.categories) - set(real.categories))
    if absent:
        raise UserError(f"{generated.root}: generated categories {', '.join(absent)} have no real images in "
                        f"{real.root}; pass as --real a set with those categories or leave them out of --generated")


def category_order(categories: Sequence[Category], present: Sequence[str]) -> list[str]:
    """Category names present in ``present``, in the configured order, ``other`` last."""
    names = [c.name for c in categories if c.name in present]
    return names + (["other"] if "other" in present else [])


def group_indices(image_set: ImageSet, names: Sequence[str]) -> dict[str, np.ndarray]:
    """``{category: indices}`` for ``names`` plus ``overall`` (all indices)."""
    cats = np.asarray(image_set.categories)
    out = {name: np.flatnonzero(cats == name) for name in names}
    out[OVERALL] = np.arange(len(image_set))
    return out


def resized(images: Sequence[np.ndarray], side: int) -> np.ndarray:
    """``(N, side, side)`` float64 stack in [0, 1] (bilinear, antialiased when shrinking)."""
    out = np.empty((len(images), side, side), np.float64)
    for i, image in enumerate(images):
        if image.shape != (side, side):
            image = np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR))
        out[i] = image / 255.0
    return out


def default_side(images: Sequence[np.ndarray]) -> int:
    """The real images' side (median of their longer sides)."""
    return int(np.median([max(image.shape) for image in images]))
