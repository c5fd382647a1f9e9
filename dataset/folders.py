"""Folders of images, predicted maps and ground-truth masks, matched by file stem.

A folder argument may be the image/mask folder itself or a paired dataset root, in which case
its ``Source Images``/``Source_Images`` (images) or ``Ground truth``/``Ground_truth`` (masks)
subfolder is used. Problems are reported as one line each: unmatched names are listed (and
skipped), maps of the wrong size are resized to the ground truth with a note, non-binary ground
truth is binarised at 128 with a note (or refused with ``strict``), empty folders stop the run.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from dataset.categories import Category, category_for_file
from dataset.files import IMAGE_DIRS, IMAGE_EXTS, MASK_DIRS, MASK_EXTS, few, find_subfolder, list_by_stem
from dataset.io import read_image, read_mask
from dataset.splits import pick_split_files
from runtime.errors import UserError


def image_folder(path: str | Path) -> Path:
    """``path`` or its ``Source Images``/``Source_Images`` subfolder."""
    return find_subfolder(Path(path), IMAGE_DIRS, "image", required=False)


def mask_folder(path: str | Path) -> Path:
    """``path`` or its ``Ground truth``/``Ground_truth`` subfolder."""
    return find_subfolder(Path(path), MASK_DIRS, "mask", required=False)


@dataclass
class Matched:
    """Stems present in both folders plus the leftovers of each side."""

    stems: list[str]
    left: dict[str, Path]
    right: dict[str, Path]
    only_left: list[str] = field(default_factory=list)
    only_right: list[str] = field(default_factory=list)


def match_by_stem(left: dict[str, Path], right: dict[str, Path], left_name: str, right_name: str,
                  log: Callable[[str], None] = print, strict: bool = False) -> Matched:
    """Pair two ``{stem: path}`` maps; list unmatched names in one line per side."""
    only_l = [s for s in left if s not in right]
    only_r = [s for s in right if s not in left]
    stems = [s for s in left if s in right]
    for names, side, other in ((only_l, left_name, right_name), (only_r, right_name, left_name)):
        if names:
            msg = f"{len(names)} {side}(s) without a matching {other}: {few(names)}"
            if strict:
                raise UserError(f"{msg}; make the names match")
            log(f"note: {msg} (skipped)")
    if not stems:
        raise UserError(f"no {left_name} name matches a {right_name} name (e.g. "
                        f"{next(iter(left))!r} vs {next(iter(right))!r}); files are matched by "
                        "name without extension")
    return Matched(stems, left, right, only_l, only_r)


def read_gray(path: str | Path) -> np.ndarray:
    """A predicted map (any image mode) as a uint8 (H, W) array."""
    return np.asarray(read_image(path).convert("L"), np.uint8)


def resize_map(arr: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a uint8 map to ``shape`` (H, W)."""
    return np.asarray(Image.fromarray(arr).resize((shape[1], shape[0]), Image.BILINEAR), np.uint8)


class MaskReader:
    """Reads ground-truth masks, collecting non-binary files for a single summary note."""

    def __init__(self, strict: bool = False):
        self.strict = strict
        self.non_binary: list[str] = []

    def __call__(self, path: Path) -> np.ndarray:
        if self.strict:
            return read_mask(path, binarize="error")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mask = read_mask(path, binarize="warn")
        if any("not binary" in str(w.message) for w in caught):
            self.non_binary.append(Path(path).name)
        return mask

    def report(self, log: Callable[[str], None] = print, what: str = "ground-truth mask") -> None:
        if self.non_binary:
            log(f"note: {len(self.non_binary)} {what}(s) not binary ({few(self.non_binary)}); "
                "binarised at 128")


def category_of(stem: str, categories: Sequence[Category] | None) -> str:
    """Category name of a file stem (by prefix); ``other`` when no category matches."""
    try:
        return category_for_file(stem, categories).name
    except UserError:
        return "other"


@dataclass
class MapPairs:
    """Matched (prediction, ground truth) maps at ground-truth size."""

    stems: list[str]
    preds: list[np.ndarray]
    gts: list[np.ndarray]
    groups: list[str]


def load_map_pairs(pred_dir: str | Path, gt_dir: str | Path, categories=None,
                   stems: Iterable[str] | None = None, strict: bool = False,
                   log: Callable[[str], None] = print) -> MapPairs:
    """Read matched predicted maps and masks; ``stems`` restricts to a subset (e.g. a test split)."""
    preds = list_by_stem(image_folder(pred_dir), IMAGE_EXTS, "predicted map", strict=False)
    gts = list_by_stem(mask_folder(gt_dir), MASK_EXTS, "ground-truth mask", strict=False)
    if stems is not None:
        gts = pick_split_files(gts, list(stems), mask_folder(gt_dir), "ground truth")
    matched = match_by_stem(preds, gts, "predicted map", "ground-truth mask", log, strict)
    reader = MaskReader(strict)
    out = MapPairs([], [], [], [])
    resized: list[str] = []
    for stem in matched.stems:
        gt = reader(gts[stem])
        pred = read_gray(preds[stem])
        if pred.shape != gt.shape:
            resized.append(f"{stem} {pred.shape[1]}x{pred.shape[0]}->{gt.shape[1]}x{gt.shape[0]}")
            pred = resize_map(pred, gt.shape)
        out.stems.append(stem)
        out.preds.append(pred)
        out.gts.append(gt)
        out.groups.append(category_of(stem, categories))
    if resized:
        log(f"note: {len(resized)} predicted map(s) resized to their ground-truth size ({few(resized, 3)})")
    reader.report(log)
    return out
