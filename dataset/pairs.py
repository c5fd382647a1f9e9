"""Finding image/mask pairs in the SD-Saliency-900 folder layout.

::

    root/
      Source Images/  (or Source_Images/)   In_1.bmp ... Sc_300.bmp   (dataset.files.IMAGE_EXTS)
      Ground truth/   (or Ground_truth/)    In_1.png ... Sc_300.png   (lossless: dataset.files.MASK_EXTS)
      caption.json                          optional: image filename -> caption

Images and masks are matched by file stem. The category comes from ``caption.json`` when it is
present, otherwise from the filename prefix.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from runtime.errors import UserError

from .categories import Category, categories_from_config, category_for_file
from .files import (
    CAPTION_FILE,
    IMAGE_DIRS,
    IMAGE_EXTS,
    MASK_DIRS,
    MASK_EXTS,
    few,
    find_subfolder,
    list_by_stem,
    natural_key,
)
from .io import open_image, read_json


@dataclass(frozen=True)
class Pair:
    """One training sample on disk."""

    stem: str
    image: Path
    mask: Path
    category: Category


def _list_files(folder: Path, exts: Sequence[str], what: str) -> dict[str, Path]:
    """Map stem -> file for files with an allowed extension (see :mod:`dataset.files`)."""
    return list_by_stem(folder, exts, what, strict=True, flag="the dataset folder")


def image_dir(root: str | Path) -> Path:
    """The image folder of a dataset root (``Source Images`` or ``Source_Images``)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: dataset folder not found; check --data_root / the config")
    return find_subfolder(root, IMAGE_DIRS, "image", required=True)


def list_images(root: str | Path) -> list[Path]:
    """Image files of a dataset root, naturally sorted by stem."""
    files = _list_files(image_dir(root), IMAGE_EXTS, "image")
    return [files[s] for s in sorted(files, key=natural_key)]


def load_captions(path: str | Path) -> dict[str, str]:
    """Read ``caption.json``: ``{filename: caption}`` or the original list of such mappings."""
    path = Path(path)
    data: Any = read_json(path, "caption file")
    entries = data if isinstance(data, list) else [data]
    captions: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            raise UserError(f"{path}: expected an object mapping image filenames to captions "
                            "(or a list of such objects); regenerate it with process_json.py")
        for key, value in entry.items():
            if not isinstance(value, str):
                raise UserError(f"{path}: caption for {key!r} must be a string, got "
                                f"{type(value).__name__}; regenerate it with process_json.py")
            captions[str(key)] = value
    return captions


def _decoded_size(path: Path) -> tuple[int, int]:
    """Size of a fully decoded image: a truncated file fails here, not mid-training."""
    with open_image(path) as img:
        return img.size


def find_pairs(root: str | Path, categories: Sequence[Category] | Any = None,
               check_sizes: bool = True) -> list[Pair]:
    """All image/mask pairs under ``root``, naturally sorted by stem.

    Raises :class:`UserError` for missing/empty folders, unmatched images or masks, a malformed
    ``caption.json``, unknown categories and (with ``check_sizes``) image/mask size mismatches.
    """
    root = Path(root)
    cats = categories_from_config(categories)
    images = _list_files(image_dir(root), IMAGE_EXTS, "image")
    masks = _list_files(find_subfolder(root, MASK_DIRS, "mask", required=True), MASK_EXTS, "mask")
    lonely_images = sorted((images[s].name for s in images.keys() - masks.keys()), key=natural_key)
    if lonely_images:
        raise UserError(f"{root}: {len(lonely_images)} image(s) without a mask: "
                        f"{few(lonely_images)}; add the masks or remove the images")
    lonely_masks = sorted((masks[s].name for s in masks.keys() - images.keys()), key=natural_key)
    if lonely_masks:
        raise UserError(f"{root}: {len(lonely_masks)} mask(s) without an image: "
                        f"{few(lonely_masks)}; add the images or remove the masks")
    caption_path = root / CAPTION_FILE
    captions = load_captions(caption_path) if caption_path.is_file() else None
    pairs = []
    for stem in sorted(images, key=natural_key):
        cat = category_for_file(images[stem].name, cats, captions)
        pairs.append(Pair(stem=stem, image=images[stem], mask=masks[stem], category=cat))
    if check_sizes:
        for pair in pairs:
            isize, msize = _decoded_size(pair.image), _decoded_size(pair.mask)
            if isize != msize:
                raise UserError(f"{pair.image.name} / {pair.mask.name}: image is "
                                f"{isize[0]}x{isize[1]} but mask is {msize[0]}x{msize[1]}; "
                                "they must have the same size")
    return pairs
