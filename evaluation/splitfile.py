"""The split files shared by training, the protocols and the study: now in :mod:`dataset.splits`; the names
stay importable from here."""
from __future__ import annotations

from dataset.splits import default_split_path, get_split, split_pairs

__all__ = ["default_split_path", "get_split", "split_pairs"]
