"""Data for DefFiller: SD-Saliency-900 pairs, splits, GLIGEN-sem samples and procedural defects.

Names are imported lazily, so ``from dataset import find_pairs`` does not load torch; the torch
datasets (``SemanticMaskDataset``, ``ProceduralDefectDataset``, ``one_hot_sem``) load it on use.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "categories": ("Category", "DEFAULT_CATEGORIES", "categories_from_config",
                   "category_for_file", "load_categories_yaml"),
    "io": ("read_image", "read_mask", "write_png_atomic", "write_json_atomic"),
    "pairs": ("Pair", "find_pairs", "list_images", "load_captions", "natural_key"),
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


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .categories import (DEFAULT_CATEGORIES, Category, categories_from_config,
                             category_for_file, load_categories_yaml)
    from .io import read_image, read_mask, write_json_atomic, write_png_atomic
    from .pairs import Pair, find_pairs, list_images, load_captions, natural_key
    from .procedural import ProceduralDefectDataset, generate_pair, write_procedural_dataset
    from .sem_dataset import SemanticMaskDataset, one_hot_sem
    from .splits import load_split, make_split, parse_ratio, save_split, subset_pairs
