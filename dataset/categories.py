"""Defect categories: name, filename prefix, semantic-map channel and text prompt.

A category's ``index`` is its channel in the one-hot semantic map (channel 0 is background), so
indices start at 1. Files are assigned to a category either from a ``caption.json`` mapping
(caption text containing the category's name or prompt) or from the filename prefix before the
first ``_`` (``In_12.bmp`` -> inclusion).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from runtime.errors import UserError


@dataclass(frozen=True)
class Category:
    """One defect class."""

    name: str
    prefix: str
    index: int
    prompt: str


DEFAULT_CATEGORIES: tuple[Category, ...] = (
    Category("inclusion", "In", 1, "inclusion"),
    Category("patches", "Pa", 2, "patches"),
    Category("scratches", "Sc", 3, "scratches"),
)

_FIELDS = ("name", "prefix", "index", "prompt")


def _to_plain(cfg: Any) -> Any:
    """Turn an OmegaConf container into plain Python objects; leave anything else alone."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # omegaconf is optional for this module
        return cfg
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def _category_from_entry(entry: Any, pos: int, where: str) -> Category:
    if isinstance(entry, Category):
        return entry
    entry = _to_plain(entry)
    if not isinstance(entry, Mapping):
        raise UserError(f"{where}: category #{pos + 1} must be a mapping with keys "
                        f"{', '.join(_FIELDS)}; got {entry!r}")
    unknown = sorted(set(map(str, entry)) - set(_FIELDS))
    if unknown:
        raise UserError(f"{where}: category #{pos + 1} has unknown key(s) {', '.join(unknown)}; "
                        f"allowed: {', '.join(_FIELDS)}")
    missing = [k for k in ("name", "prefix", "index") if entry.get(k) in (None, "")]
    if missing:
        raise UserError(f"{where}: category #{pos + 1} is missing {', '.join(missing)}")
    index = entry["index"]
    if isinstance(index, bool) or not isinstance(index, int):
        raise UserError(f"{where}: category {entry['name']!r} index must be an integer, got {index!r}")
    name, prefix = str(entry["name"]), str(entry["prefix"])
    if "_" in prefix:
        raise UserError(f"{where}: category {name!r} prefix {prefix!r} must not contain '_' "
                        "(the prefix is the filename part before the first '_')")
    prompt = entry.get("prompt")
    return Category(name=name, prefix=prefix, index=index,
                    prompt=name if prompt in (None, "") else str(prompt))


def validate_categories(categories: Sequence[Category], where: str = "categories") -> None:
    """Raise :class:`UserError` unless names/prefixes/indices are unique and indices are >= 1."""
    if not categories:
        raise UserError(f"{where}: the category list is empty; give at least one category")
    for attr in ("name", "prefix", "index"):
        seen: dict[Any, str] = {}
        for cat in categories:
            key = getattr(cat, attr)
            key = key.lower() if isinstance(key, str) else key
            if key in seen:
                raise UserError(f"{where}: categories {seen[key]!r} and {cat.name!r} share the "
                                f"{attr} {getattr(cat, attr)!r}; each {attr} must be unique")
            seen[key] = cat.name
    for cat in categories:
        if cat.index < 1:
            raise UserError(f"{where}: category {cat.name!r} has index {cat.index}; indices start "
                            "at 1 (channel 0 of the semantic map is background)")


def categories_from_config(cfg: Any = None, where: str = "categories") -> list[Category]:
    """Build categories from a list of ``{name, prefix, index, prompt}`` entries.

    Accepts a plain list, an OmegaConf ``ListConfig``, a mapping with a ``categories`` key, a
    sequence of :class:`Category`, or ``None`` (the three SD-Saliency-900 defaults).
    """
    if cfg is None:
        return list(DEFAULT_CATEGORIES)
    cfg = _to_plain(cfg)
    if isinstance(cfg, Mapping):
        if "categories" not in cfg:
            raise UserError(f"{where}: expected a list of categories or a mapping with a "
                            "'categories' key")
        return categories_from_config(cfg["categories"], where)
    if isinstance(cfg, (str, bytes)) or not isinstance(cfg, Iterable):
        raise UserError(f"{where}: expected a list of categories, got {type(cfg).__name__}")
    cats = [_category_from_entry(e, i, where) for i, e in enumerate(cfg)]
    validate_categories(cats, where)
    return cats


def load_categories_yaml(path: str | Path) -> list[Category] | None:
    """Read the ``categories:`` list of a YAML file (top level or under ``data:``), else ``None``."""
    from runtime.options import read_yaml

    cfg = read_yaml(path, "categories YAML", "pass a YAML with a categories: list (see configs/)")
    for section in (cfg, cfg.get("data")):
        if isinstance(section, dict) and section.get("categories") is not None:
            return categories_from_config(section.get("categories"), where=str(path))
    return None


def _word_pattern(term: str) -> re.Pattern[str]:
    return re.compile(r"(?<![0-9a-z])" + re.escape(term.lower()) + r"(?![0-9a-z])")


def category_from_caption(caption: str, categories: Sequence[Category],
                          where: str = "caption") -> Category:
    """The category whose name or prompt occurs as whole words in ``caption`` (case-insensitive).

    A match lying inside a longer match of another category is ignored ("edge crack" beats
    "crack"); two categories named independently make the caption ambiguous.
    """
    text = caption.lower()
    spans: dict[str, list[tuple[int, int]]] = {}
    for cat in categories:
        for term in {cat.name, cat.prompt}:
            if term:
                spans.setdefault(cat.name, []).extend(
                    m.span() for m in _word_pattern(term).finditer(text))
    found = {name: s for name, s in spans.items() if s}

    def shadowed(name: str) -> bool:
        return all(any(o0 <= a and b <= o1 and (o1 - o0) > (b - a)
                       for other, others in found.items() if other != name
                       for o0, o1 in others)
                   for a, b in found[name])

    winners = [c for c in categories if c.name in found and not shadowed(c.name)]
    if not winners:
        known = ", ".join(repr(c.prompt) for c in categories)
        raise UserError(f"{where}: caption {caption!r} names no known category (known: {known}); "
                        "fix the caption or the category list")
    if len(winners) > 1:
        raise UserError(f"{where}: caption {caption!r} is ambiguous between {winners[0].name!r} "
                        f"and {winners[1].name!r}; make the caption name only one category")
    return winners[0]


def category_from_prefix(name: str, categories: Sequence[Category]) -> Category:
    """The category whose prefix is the filename part before the first ``_`` (case-insensitive)."""
    base = Path(name).name
    known = ", ".join(c.prefix for c in categories)
    if "_" not in base:
        raise UserError(f"{base}: cannot tell the defect category; name files <prefix>_<n> with a "
                        f"known prefix ({known}) or provide caption.json")
    prefix = base.split("_", 1)[0].lower()
    for cat in categories:
        if cat.prefix.lower() == prefix:
            return cat
    raise UserError(f"{base}: unknown category prefix {base.split('_', 1)[0]!r}; known prefixes: "
                    f"{known} (rename the file or add the category to the config)")


def _lookup_caption(base: str, captions: Mapping[str, str]) -> str | None:
    if base in captions:
        return captions[base]
    stem = os.path.splitext(base)[0]
    for key, caption in captions.items():
        if os.path.splitext(os.path.basename(key))[0] == stem:
            return caption
    return None


def category_for_file(name: str, categories: Sequence[Category] | None = None,
                      captions: Mapping[str, str] | None = None) -> Category:
    """Category of image file ``name`` (a filename or path).

    With ``captions`` (filename -> caption, as in ``caption.json``) the caption decides; a file
    the mapping does not list falls back to its filename prefix.
    """
    cats = list(DEFAULT_CATEGORIES) if categories is None else list(categories)
    base = Path(name).name
    if captions:
        caption = _lookup_caption(base, captions)
        if caption is not None:
            return category_from_caption(str(caption), cats, where=f"caption.json entry {base}")
    return category_from_prefix(base, cats)
