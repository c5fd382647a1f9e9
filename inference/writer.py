"""The output: a paired dataset (``Source_Images/``, ``Ground_truth/``) plus ``generation.json``.

Existing outputs are never overwritten: a folder generated with other settings is refused, and a
folder with the same settings is resumed by skipping the images already there. Every file is
written atomically; records are flushed per batch and per rank, then merged.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from dataset.io import write_json_atomic, write_png_atomic
from ldm.errors import UserError

IMAGES, MASKS, RECORD = "Source_Images", "Ground_truth", "generation.json"
SETTING_KEYS = ("checkpoint_sha256", "sampler", "steps", "guidance_scale", "seed", "negative_prompt",
                "alpha_type", "output_size", "mode", "strength", "precision", "weights")


class PairedWriter:
    def __init__(self, root: Path, settings: dict, rank: int = 0) -> None:
        self.root, self.settings, self.rank = root, settings, rank
        self.images, self.masks = root / IMAGES, root / MASKS
        self.records: dict[str, dict] = {}
        previous = self._read_existing()
        if previous is not None:
            old = {k: previous.get("settings", {}).get(k) for k in SETTING_KEYS}
            new = {k: settings.get(k) for k in SETTING_KEYS}
            diff = [k for k in SETTING_KEYS if old[k] != new[k]]
            if diff:
                raise UserError(f"{root} was generated with other settings ({', '.join(diff)} differ); "
                                "choose another --save_folder_name (nothing was overwritten)")
            self.records.update(previous.get("images", {}))
        self.images.mkdir(parents=True, exist_ok=True)
        self.masks.mkdir(parents=True, exist_ok=True)

    def _read_existing(self) -> Optional[dict]:
        path = self.root / RECORD
        merged = None
        if path.is_file():
            try:
                merged = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise UserError(f"{path} is corrupt ({exc}); move it away or use another --save_folder_name")
        for part in sorted(self.root.glob("generation.rank*.json")):
            data = json.loads(part.read_text())
            merged = merged or {"settings": data["settings"], "images": {}}
            merged["images"].update(data.get("images", {}))
        if merged is None and self.images.is_dir() and any(self.images.iterdir()):
            raise UserError(f"{self.images} already holds images without a {RECORD}; "
                            "choose another --save_folder_name (nothing was overwritten)")
        return merged

    def done(self, name: str) -> bool:
        return (name in self.records and (self.images / f"{name}.png").is_file()
                and (self.masks / f"{name}.png").is_file())

    def write(self, name: str, image01: torch.Tensor, mask: torch.Tensor, record: dict, grayscale: bool) -> None:
        """One pair: image (C x H x W in [0, 1], C = 1 or 3) and its binary mask (H x W bool)."""
        arr = (image01.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        img = Image.fromarray(arr[..., 0]) if arr.shape[-1] == 1 else Image.fromarray(arr)
        img = img.convert("L") if grayscale else img
        write_png_atomic(Image.fromarray(mask.cpu().numpy().astype(np.uint8) * 255), self.masks / f"{name}.png")
        write_png_atomic(img, self.images / f"{name}.png")
        self.records[name] = record

    def flush(self) -> None:
        """Persist this rank's records (cheap enough to call after every batch)."""
        write_json_atomic({"settings": self.settings, "images": self.records},
                          self.root / f"generation.rank{self.rank}.json")

    def merge(self) -> Path:
        """Rank 0, after every rank flushed: one ``generation.json``, rank files removed."""
        merged = {"settings": self.settings, "images": {}}
        path = self.root / RECORD
        if path.is_file():
            merged["images"].update(json.loads(path.read_text()).get("images", {}))
        parts = sorted(self.root.glob("generation.rank*.json"))
        for part in parts:
            merged["images"].update(json.loads(part.read_text()).get("images", {}))
        merged["images"] = dict(sorted(merged["images"].items()))
        write_json_atomic(merged, path)
        for part in parts:
            part.unlink(missing_ok=True)
        return path
