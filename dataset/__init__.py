"""Data for DefFiller: SD-Saliency-900 pairs, splits, GLIGEN-sem samples and procedural defects.

Names are imported lazily, so ``from dataset import find_pairs`` does not load torch; the torch
datasets (``SemanticMaskDataset``, ``ProceduralDefectDataset``, ``one_hot_sem``) load it on use.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "categories": ("Category", "DEFAULT_CATEGORIES", "categories_from_config",
                   "category_for_file", "load_categories_yaml"),
    "io": ("read_image", "read_mask", "write_png_atomic", "write_json_atomic"),
    "files": ("IMAGE_EXTS", "MASK_EXTS", "natural_key"),
    "pairs": ("Pair", "find_pairs", "list_images", "load_captions"),
    "splits": ("make_split", "parse_ratio", "save_split", "load_split", "subset_pairs"),
    "sem_dataset": ("SemanticMaskDataset", "one_hot_sem"),
    "procedural": ("ProceduralDefectDataset", "generate_pair", "write_procedural_dataset"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'dataset' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

