"""The output: a paired dataset (``Source_Images/``, ``Ground_truth/``) plus ``generation.json``.

Existing outputs are never overwritten: a folder generated with other settings (any of
``SETTING_KEYS``: everything that changes the pixels) is refused, and a folder with the same
settings is resumed by skipping the images already there. Every file is written atomically;
records are flushed per batch and per rank, then merged. A write that fails (full disk, read-only
folder) is a one-line :class:`UserError`; what was written before stays valid for a resume.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
from PIL import Image

from dataset.files import IMAGES_DIR, MASKS_DIR, is_hidden
from dataset.io import read_json, write_json_atomic, write_png_atomic
from runtime.errors import UserError

RECORD = "generation.json"
SETTING_KEYS = ("checkpoint_sha256", "config_sha256", "weights", "precision", "mask_dir", "num_per_mask", "seed",
                "prompt", "negative_prompt", "sampler", "steps", "guidance_scale", "guidance_interval", "guidance_low",
                "alpha_type", "mode", "strength", "dilate", "background", "output_size", "grayscale", "upscaler")
INFER_FIX = "choose another --folder / --save_folder_name"
TEMP_GLOB = ".*.tmp"  # unfinished atomic writes (runtime.atomic) of a killed run


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an OS error while writing ``path`` into a one-line :class:`UserError`."""
    try:
        yield
    except OSError as exc:
        raise UserError(f"{path}: cannot write ({exc.strerror or exc}); free disk space or fix the folder's "
                        "permissions, then rerun to resume (pairs written so far are kept)") from None


def prepare_root(root: Path) -> None:
    """Create ``root``; a path that is a file, a read-only parent etc. is a one-line error."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{root}: exists and is not a folder; choose another --folder / --save_folder_name") from None
    except OSError as exc:
        raise UserError(f"{root}: cannot create the output folder ({exc.strerror}); "
                        "choose another --folder / --save_folder_name") from None


def prepare_folder(root: Path) -> None:
    """Remove stale temporary files. Call only while holding the folder's lock: then no other
    writer is live, so every ``.*.tmp`` file is left over from a killed run."""
    for folder in (root, root / IMAGES_DIR, root / MASKS_DIR):
        if folder.is_dir():
            for tmp in folder.glob(TEMP_GLOB):
                with contextlib.suppress(OSError):
                    tmp.unlink()


def _read_record(path: Path) -> dict:
    data = read_json(path, "generation record")
    if (not isinstance(data, dict) or not isinstance(data.get("settings"), dict)
            or not isinstance(data.get("images", {}), dict)):
        raise UserError(f"{path}: not a generation record (expected an object with 'settings' and 'images'); "
                        "move it away or choose another --save_folder_name")
    data.setdefault("images", {})
    return data


class PairedWriter:
    """One rank's view of a paired dataset folder: the pairs recorded so far, new pairs, their records.

    The rank's record (the settings) reaches the disk before its first pair, so a run stopped at any point
    (kill -9, a full disk) leaves a folder the same command resumes: a pair without a record is
    regenerated (infer.py) or its name reused (the page's keep); never adopted, as nothing says which
    settings made it. A folder holding images and no record at all was not written by this code: refused.
    ``fix`` ends the refusals (the flag that picks another folder).
    """

    def __init__(self, root: Path, settings: dict, rank: int = 0, fix: str = INFER_FIX) -> None:
        self.root, self.settings, self.rank, self.fix = root, settings, rank, fix
        self.images, self.masks = root / IMAGES_DIR, root / MASKS_DIR
        self.records: dict[str, dict] = {}
        self.flushed = False
        previous = self._read_existing()
        if previous is not None:
            old = {k: previous.get("settings", {}).get(k) for k in SETTING_KEYS}
            new = {k: settings.get(k) for k in SETTING_KEYS}
            diff = [k for k in SETTING_KEYS if old[k] != new[k]]
            if diff:
                shown = ", ".join(f"{k} {old[k]!r} -> {new[k]!r}" for k in diff[:3])
                raise UserError(f"{root} was generated with other settings ({shown}); "
                                f"{fix} (nothing was overwritten)")
            self.records.update(previous.get("images", {}))
        for folder in (self.images, self.masks):
            with writing(folder):
                folder.mkdir(parents=True, exist_ok=True)

    def _read_existing(self) -> Optional[dict]:
        path = self.root / RECORD
        merged = None
        if path.is_file():
            merged = _read_record(path)
        for part in sorted(self.root.glob("generation.rank*.json")):
            data = _read_record(part)
            merged = merged or {"settings": data["settings"], "images": {}}
            merged["images"].update(data["images"])
        # a record is written before any image (write flushes first): images without any record are not ours
        if merged is None and self.images.is_dir() and any(not is_hidden(p) for p in self.images.iterdir()):
            raise UserError(f"{self.images} already holds images without a {RECORD}; move them away or "
                            f"{self.fix} (nothing was overwritten)")
        return merged

    def done(self, name: str) -> bool:
        return (name in self.records and (self.images / f"{name}.png").is_file()
                and (self.masks / f"{name}.png").is_file())

    def write(self, name: str, image01: torch.Tensor, mask: torch.Tensor, record: dict, grayscale: bool) -> None:
        """One pair: image (C x H x W in [0, 1], C = 1 or 3) and its binary mask (H x W bool); the rank's
        record is flushed first when it is not on disk yet."""
        if not self.flushed:
            self.flush()
        arr = (image01.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        img = Image.fromarray(arr[..., 0]) if arr.shape[-1] == 1 else Image.fromarray(arr)
        img = img.convert("L") if grayscale else img
        with writing(self.masks / f"{name}.png"):
            write_png_atomic(Image.fromarray(mask.cpu().numpy().astype(np.uint8) * 255), self.masks / f"{name}.png")
        with writing(self.images / f"{name}.png"):
            write_png_atomic(img, self.images / f"{name}.png")
        self.records[name] = record

    def flush(self) -> None:
        """Persist this rank's records (cheap enough to call after every batch)."""
        path = self.root / f"generation.rank{self.rank}.json"
        with writing(path):
            write_json_atomic({"settings": self.settings, "images": self.records}, path)
        self.flushed = True

    def flush_quietly(self) -> None:
        """:meth:`flush`, when stopping: a failure here (the disk that stopped the run) must not hide the first."""
        with contextlib.suppress(UserError, OSError):
            self.flush()

    def merge(self) -> Path:
        """Rank 0, after every rank flushed: one ``generation.json``, rank files removed."""
        merged = {"settings": self.settings, "images": {}}
        path = self.root / RECORD
        if path.is_file():
            merged["images"].update(_read_record(path)["images"])
        parts = sorted(self.root.glob("generation.rank*.json"))
        for part in parts:
            merged["images"].update(_read_record(part)["images"])
        merged["images"] = dict(sorted(merged["images"].items()))
        with writing(path):
            write_json_atomic(merged, path)
        for part in parts:
            part.unlink(missing_ok=True)
        return path
