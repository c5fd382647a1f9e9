"""Which files count as images and masks, and listing them by stem: the one table every loader uses.

Masks must be lossless (``.png .bmp .tif .tiff``): JPEG turns a binary mask's edges into grey
levels, so a ``.jpg`` mask is refused rather than binarised silently. Images may also be JPEG.
Dotfiles (``.DS_Store``, ``._In_1.png``, unfinished ``.In_1.png.*.tmp`` writes) and folders are
never images or masks.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

from runtime.errors import UserError

IMAGE_EXTS = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
MASK_EXTS = (".png", ".bmp", ".tif", ".tiff")
LOSSY_EXTS = (".jpg", ".jpeg")
CAPTION_FILE = "caption.json"  # may sit beside the masks; never reported as a stray file
#: a paired dataset's folders: written with underscores, read in either spelling (the original's has spaces)
IMAGES_DIR, MASKS_DIR = "Source_Images", "Ground_truth"
IMAGE_DIRS = ("Source Images", IMAGES_DIR)
MASK_DIRS = ("Ground truth", MASKS_DIR)
_SHOW = 5
_SAMPLE_SUFFIX = re.compile(r"_s\d+$")


def sample_stem(mask_stem: str, k: int, num_per_mask: int) -> str:
    """The name of the ``k``-th sample generated from a mask: the mask's own stem when one sample per mask
    is generated, else ``<mask>_s<k>``."""
    return mask_stem if num_per_mask == 1 else f"{mask_stem}_s{k}"


def source_stem(stem: str) -> str:
    """``In_12_s3`` -> ``In_12``: the mask a generated sample is named after (see :func:`sample_stem`)."""
    return _SAMPLE_SUFFIX.sub("", stem)


def natural_key(text: str) -> tuple:
    """Sort key ordering embedded numbers numerically (``In_2`` before ``In_10``)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.lower())
                 for part in re.split(r"(\d+)", text) if part)


def few(names: Sequence[str], show: int = _SHOW) -> str:
    """``a, b, c and 4 more``"""
    names = list(names)
    return ", ".join(names[:show]) + (f" and {len(names) - show} more" if len(names) > show else "")


def is_hidden(path: Path) -> bool:
    """Dotfiles: never data (OS metadata, editor backups, unfinished atomic writes)."""
    return path.name.startswith(".")


def find_subfolder(root: Path, options: Sequence[str], what: str, *, required: bool) -> Path:
    """The one of ``options`` (e.g. :data:`MASK_DIRS`) that exists under ``root``; two of them is an error.
    With none, ``root`` itself when not ``required`` (a plain folder of files), else an error."""
    found = [root / name for name in options if (root / name).is_dir()]
    if len(found) > 1:
        raise UserError(f"{root}: both {found[0].name!r} and {found[1].name!r} exist; keep only one {what} folder")
    if found:
        return found[0]
    if required:
        raise UserError(f"{root}: no {what} folder; expected one named {' or '.join(repr(o) for o in options)}")
    return root


def list_by_stem(folder: str | Path, exts: Sequence[str], what: str, *, strict: bool,
                 flag: str = "the folder") -> dict[str, Path]:
    """``{stem: file}`` of ``folder``'s files with one of ``exts``, naturally sorted by stem.

    Dotfiles and ``caption.json`` are ignored. A missing or empty folder, two files with one stem
    (``a.png`` + ``a.bmp``) and a dangling or looping symbolic link among the listed files raise
    :class:`UserError` naming the folder and ``flag``. ``strict`` (data a command trains on or generates
    from) also refuses a JPEG where only lossless files are accepted and any dangling link, and warns once
    about other files and sub-folders it skips; lax (``strict=False``: folders of results to score, a mask
    producer's output) skips what is not one of ``exts`` silently.
    """
    folder = Path(folder)
    if not folder.is_dir():
        what_it_is = "is a file, not a folder" if folder.exists() else "not found"
        raise UserError(f"{folder}: {what} folder {what_it_is}; check {flag}")
    files: dict[str, Path] = {}
    skipped: list[str] = []
    lossless_only = set(exts) <= set(MASK_EXTS)
    for path in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if is_hidden(path) or path.name == CAPTION_FILE:
            continue
        suffix = path.suffix.lower()
        if path.is_symlink() and not path.exists() and (strict or suffix in exts):
            raise UserError(f"{path}: broken or looping symbolic link in the {what} folder; fix or remove it")
        if not path.is_file() or suffix not in exts:
            if strict and path.is_file() and suffix in LOSSY_EXTS and lossless_only:
                raise UserError(f"{path}: JPEG {what}s are lossy (grey edges); save {what}s losslessly as "
                                f"{' '.join(MASK_EXTS)}")
            skipped.append(path.name + ("/" if path.is_dir() else ""))
            continue
        if path.stem in files:
            raise UserError(f"{folder}: {files[path.stem].name} and {path.name} have the same name "
                            f"{path.stem!r}; keep one {what} per name")
        files[path.stem] = path
    if strict and skipped:
        warnings.warn(f"{folder}: skipping {len(skipped)} non-{what} entr{'y' if len(skipped) == 1 else 'ies'} "
                      f"(not {' '.join(exts)}): {few(skipped)}", stacklevel=2)
    if not files:
        raise UserError(f"{folder}: no {what} files ({' '.join(exts)}); check {flag}")
    return {stem: files[stem] for stem in sorted(files, key=natural_key)}
