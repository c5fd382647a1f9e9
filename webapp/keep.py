"""Kept pairs: the images a user keeps go into one paired dataset folder, as ``infer.py`` writes it.

``<out>/Source_Images/<name>.png``, ``<out>/Ground_truth/<name>.png`` and ``<out>/generation.json``
(``settings`` of the checkpoint, ``images`` with one ``infer.py`` record per pair), every file
written atomically under the folder's lock (``runtime.lock.FolderLock``), so another app or an
``infer.py`` run into the same folder cannot interleave. Names are ``<category prefix>_app_<n>`` so the
dataset loader reads the category from the filename.
"""
from __future__ import annotations

import json
import re
import tempfile
import zipfile
from pathlib import Path

import torch

from dataset.files import IMAGES_DIR, MASKS_DIR
from inference.writer import RECORD, PairedWriter
from runtime.atomic import write_atomic
from runtime.errors import UserError
from runtime.lock import FolderLock

_NAME = re.compile(r"_app_(\d+)$")
KEEP_FIX = "start the app with another --out"


class KeptPairs:
    """A paired dataset folder that grows one pair per :meth:`add`."""

    def __init__(self, root: Path, settings: dict) -> None:
        self.root, self.settings = Path(root), settings
        with FolderLock(self.root, KEEP_FIX, create=True):  # another checkpoint's folder is refused now, not at Keep
            PairedWriter(self.root, settings, fix=KEEP_FIX)

    def next_name(self, prefix: str, records: dict | None = None) -> str:
        if records is None:
            with FolderLock(self.root, KEEP_FIX):
                records = PairedWriter(self.root, self.settings, fix=KEEP_FIX).records
        numbers = [int(m.group(1)) for n in records if (m := _NAME.search(n))]
        return f"{prefix}_app_{max(numbers, default=0) + 1:04d}"

    def add(self, prefix: str, image01: torch.Tensor, mask: torch.Tensor, record: dict,
            grayscale: bool = False) -> str:
        """Write one pair and its record; returns the pair's name."""
        with FolderLock(self.root, KEEP_FIX):
            # re-read: another process may have added pairs
            writer = PairedWriter(self.root, self.settings, fix=KEEP_FIX)
            name = self.next_name(prefix, writer.records)
            writer.write(name, image01, mask, record, grayscale)
            writer.flush()
            writer.merge()
        return name

    def items(self) -> list[tuple[str, str]]:
        """(image path, caption) of every kept pair, newest first."""
        records = self._records()
        out = []
        for name, rec in records.items():
            image = self.root / IMAGES_DIR / f"{name}.png"
            if image.is_file():
                out.append((str(image), f"{name} · {rec.get('category', '')} · seed {rec.get('seed', '')}"))
        return sorted(out, key=lambda item: _order(Path(item[0]).stem), reverse=True)

    def _records(self) -> dict:
        """The kept pairs' records; a damaged ``generation.json`` is a one-line error naming it."""
        path = self.root / RECORD
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UserError(f"{path}: cannot read the kept pairs' record ({type(exc).__name__}); move it away "
                            "or start the app with another --out") from None
        images = data.get("images") if isinstance(data, dict) else None
        if not isinstance(images, dict):
            raise UserError(f"{path}: not a generation record (no 'images' object); move it away or start the "
                            "app with another --out")
        return {k: v if isinstance(v, dict) else {} for k, v in images.items()}

    def zip(self) -> Path:
        """The whole folder as ``<name>.zip`` in a fresh temporary folder (written atomically)."""
        target = Path(tempfile.mkdtemp(prefix="deffiller_kept_")) / f"{self.root.name}.zip"
        files = [self.root / RECORD] + sorted((self.root / IMAGES_DIR).glob("*.png")) + sorted(
            (self.root / MASKS_DIR).glob("*.png"))

        def write(fh) -> None:
            with zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
                for f in files:
                    if f.is_file():
                        zf.write(f, f"{self.root.name}/{f.relative_to(self.root)}")
        return write_atomic(target, write)


def _order(name: str) -> int:
    m = _NAME.search(name)
    return int(m.group(1)) if m else 0
