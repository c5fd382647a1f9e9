"""Finding and loading the ground-truth masks the mask DDPM learns from (and the report compares to).

``--data_root`` is either a folder of mask PNGs or a dataset root holding ``Ground truth`` /
``Ground_truth`` (the SD-Saliency-900 layout). The category of each mask comes from its filename
prefix (``In_12.png`` -> inclusion), through the project's category list.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dataset.categories import Category, category_for_file
from dataset.files import MASK_DIRS, MASK_EXTS, find_subfolder, list_by_stem
from dataset.io import read_mask
from runtime.errors import UserError


def mask_dir(path: str | Path) -> Path:
    """The folder that holds the mask files: ``path`` itself or its ground-truth subfolder."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: mask folder not found; pass a folder of mask PNGs or a dataset "
                        f"root with {' or '.join(repr(d) for d in MASK_DIRS)}")
    return find_subfolder(path, MASK_DIRS, "mask", required=False)


def find_mask_files(path: str | Path) -> list[Path]:
    """Mask files under ``path`` (see :func:`mask_dir`), naturally sorted; other files are skipped silently
    (the lax mode of :func:`dataset.files.list_by_stem`)."""
    flag = f"the path (a folder of masks or a dataset root with {' or '.join(repr(d) for d in MASK_DIRS)})"
    return list(list_by_stem(mask_dir(path), MASK_EXTS, "mask", strict=False, flag=flag).values())


@dataclass
class MaskSet:
    """Masks grouped by category: ``masks[name]`` is a list of boolean arrays at native size."""

    categories: list[Category]
    masks: dict[str, list[np.ndarray]]
    files: dict[str, list[Path]]

    def counts(self) -> dict[str, int]:
        return {c.name: len(self.masks[c.name]) for c in self.categories}


def load_masks(path: str | Path | Sequence[Path], categories: Sequence[Category], binarize: str = "error",
               require_all: bool = False) -> MaskSet:
    """Read every mask under ``path`` (a folder, a dataset root, or a list of mask files) and sort it
    into its category.

    Unknown filename prefixes, non-binary masks (with ``binarize="error"``) and unreadable files
    raise :class:`UserError`; so does a category without masks when ``require_all`` is set.
    """
    cats = list(categories)
    masks: dict[str, list[np.ndarray]] = {c.name: [] for c in cats}
    files: dict[str, list[Path]] = {c.name: [] for c in cats}
    listed = [Path(f) for f in path] if isinstance(path, (list, tuple)) else find_mask_files(path)
    for file in listed:
        cat = category_for_file(file.name, cats)
        masks[cat.name].append(read_mask(file, binarize=binarize))
        files[cat.name].append(file)
    if require_all:
        missing = [c for c in cats if not masks[c.name]]
        if missing:
            raise UserError(f"{mask_dir(path)}: no masks for categor{'y' if len(missing) == 1 else 'ies'} "
                            f"{', '.join(f'{c.name} ({c.prefix}_*)' for c in missing)}; add them or "
                            "drop the category from the config")
    return MaskSet(cats, masks, files)


def to_training_tensor(masks: Sequence[np.ndarray], size: int, binarize: Optional[float] = None) -> torch.Tensor:
    """N×1×size×size float tensor in [-1, 1]: each mask area-averaged to ``size``; with
    ``binarize`` the averaged values are then thresholded (> binarize -> 1) to a binary mask."""
    out = []
    for m in masks:
        t = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))[None, None]
        out.append(F.interpolate(t, size=(size, size), mode="area"))
    x = torch.cat(out)
    if binarize is not None:
        x = (x > float(binarize)).float()
    return x * 2.0 - 1.0


def training_data(path: str | Path, categories: Sequence[Category], size: int,
                  binarize: Optional[float] = None) -> tuple[torch.Tensor, torch.Tensor, MaskSet]:
    """All masks as a training tensor plus class ids (the position of the category in the list)."""
    mask_set = load_masks(path, categories, binarize="error", require_all=True)
    xs, ys = [], []
    for pos, cat in enumerate(mask_set.categories):
        xs.append(to_training_tensor(mask_set.masks[cat.name], size, binarize))
        ys.append(torch.full((len(mask_set.masks[cat.name]),), pos, dtype=torch.long))
    return torch.cat(xs), torch.cat(ys), mask_set
