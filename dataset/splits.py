"""Train/test splits: deterministic by seed, stratified per category, and the split files that training,
the protocols and the study share (made on first use under ``DATA/splits/``).

The paper's protocols are written ``train:test``: ``9:1`` (``test_fraction`` 0.1) and ``1:5``
(one part training, five parts test; ``test_fraction`` 5/6). Each category contributes
``round(n_category * test_fraction)`` test samples.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from runtime.configs import REPO
from runtime.errors import UserError

from .files import few
from .io import read_json, write_json_atomic
from .pairs import Pair, find_pairs, natural_key

SPLIT_KEYS = ("train", "test", "seed", "test_fraction")


def parse_ratio(text: str) -> float:
    """``"train:test"`` (e.g. ``"9:1"``, ``"1:5"``) or a plain fraction -> test fraction."""
    raw = str(text).strip()
    try:
        if ":" in raw:
            train, test = (float(p) for p in raw.split(":"))
            if train < 0 or test < 0 or train + test <= 0 or not math.isfinite(train + test):
                raise ValueError
            return test / (train + test)
        value = float(raw)
    except ValueError:
        raise UserError(f"split ratio {text!r}: write it as train:test with non-negative numbers "
                        "(e.g. 9:1 or 1:5) or as a test fraction in [0, 1]") from None
    if not 0.0 <= value <= 1.0:
        raise UserError(f"split ratio {text!r}: a test fraction must lie in [0, 1]")
    return value


def _stem_and_group(item: Pair | str) -> tuple[str, str]:
    if isinstance(item, Pair):
        return item.stem, item.category.name
    if isinstance(item, str):
        return item, item.split("_", 1)[0] if "_" in item else ""
    raise TypeError(f"make_split takes Pair objects or stem strings, got {type(item).__name__}")


def _n_test(n: int, test_fraction: float) -> int:
    return min(n, int(math.floor(n * test_fraction + 0.5 + 1e-9)))


def make_split(pairs_or_stems: Sequence[Pair | str], test_fraction: float, seed: int,
               stratify_by_category: bool = True) -> dict[str, Any]:
    """Split samples into ``{"train", "test", "seed", "test_fraction", "stratify_by_category"}``.

    Strata are the pairs' categories (for plain stems: the filename prefix). The result depends
    only on the set of stems, ``test_fraction``, ``seed`` and stratification, not on input order.
    """
    if isinstance(test_fraction, bool) or not 0.0 <= float(test_fraction) <= 1.0:
        raise UserError(f"test_fraction {test_fraction!r} must lie in [0, 1]")
    items = [_stem_and_group(x) for x in pairs_or_stems]
    if not items:
        raise UserError("cannot split an empty dataset; check the dataset folder")
    stems = [s for s, _ in items]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1}, key=natural_key)
        raise UserError(f"duplicate sample name(s) {', '.join(dup[:5])}; every stem must be unique")
    groups: dict[str, list[str]] = {}
    for stem, group in items:
        groups.setdefault(group if stratify_by_category else "", []).append(stem)
    rng = np.random.default_rng(int(seed))
    train: list[str] = []
    test: list[str] = []
    for group in sorted(groups):
        members = sorted(groups[group], key=natural_key)
        order = rng.permutation(len(members))
        k = _n_test(len(members), float(test_fraction))
        test.extend(members[i] for i in order[:k])
        train.extend(members[i] for i in order[k:])
    return {"train": sorted(train, key=natural_key), "test": sorted(test, key=natural_key),
            "seed": int(seed), "test_fraction": float(test_fraction),
            "stratify_by_category": bool(stratify_by_category)}


def carve_validation(split: dict[str, Any], fraction: float = 0.1, seed: int = 0) -> dict[str, Any]:
    """A split of ``split``'s training pairs alone: ``train`` the pairs to train on, ``test`` the validation
    pairs every design choice is made on (stratified like :func:`make_split`). The parent's test pairs are
    in neither; ``parent_test`` lists them so that a run can check it never sees them."""
    carved = make_split(split["train"], fraction, seed)
    carved.update({"validation_of": {"seed": split.get("seed"), "test_fraction": split.get("test_fraction")},
                   "parent_test": list(split["test"])})
    return carved


def _check_split(split: Any, where: str) -> dict[str, Any]:
    if not isinstance(split, dict):
        raise UserError(f"{where}: a split must be a JSON object with keys {', '.join(SPLIT_KEYS)}")
    missing = [k for k in SPLIT_KEYS if k not in split]
    if missing:
        raise UserError(f"{where}: split is missing {', '.join(missing)}; regenerate it")
    for key in ("train", "test"):
        if not isinstance(split[key], list) or not all(isinstance(s, str) for s in split[key]):
            raise UserError(f"{where}: split '{key}' must be a list of sample names; regenerate it")
    overlap = sorted(set(split["train"]) & set(split["test"]), key=natural_key)
    if overlap:
        raise UserError(f"{where}: {len(overlap)} sample(s) are in both train and test "
                        f"({', '.join(overlap[:5])}); regenerate the split")
    return split


def save_split(split: dict[str, Any], path: str | Path) -> Path:
    """Write a split as JSON atomically (validated first)."""
    _check_split(split, str(path))
    return write_json_atomic(split, path)


def load_split(path: str | Path) -> dict[str, Any]:
    """Read and validate a split written by :func:`save_split`."""
    return _check_split(read_json(path, "split file"), str(path))


def subset_pairs(pairs: Sequence[Pair], stems: Sequence[str]) -> list[Pair]:
    """The pairs named by ``stems``, in the order given; unknown or repeated stems are errors."""
    if isinstance(stems, str):
        raise TypeError("subset_pairs takes a list of stems, not a single string")
    by_stem = {p.stem: p for p in pairs}
    unknown = [s for s in stems if s not in by_stem]
    if unknown:
        raise UserError(f"{len(unknown)} sample(s) of the split are not in the dataset: "
                        f"{few([str(s) for s in unknown])}; use a split made for this dataset")
    if len(set(stems)) != len(stems):
        raise UserError("the split lists a sample more than once; regenerate it")
    return [by_stem[s] for s in stems]


def pick_split_files(files: Mapping[str, Path], stems: Sequence[str], folder: str | Path,
                     what: str) -> dict[str, Path]:
    """``{stem: file}`` of a split's ``stems``, in their order, from a folder's listing; stems without a file are
    a one-line :class:`UserError` naming ``folder``."""
    missing = [s for s in stems if s not in files]
    if missing:
        raise UserError(f"{folder}: {len(missing)} split sample(s) have no {what} ({few(missing)}); use the split "
                        "made for this dataset")
    return {s: files[s] for s in stems}


def default_split_path(data_root: str | Path, ratio: str, seed: int) -> Path:
    """``DATA/splits/<dataset folder>_<train>-<test>_seed<seed>.json`` (DATA/ is git-ignored)."""
    name = re.sub(r"[^A-Za-z0-9.-]+", "_", Path(data_root).resolve().name)
    tag = str(ratio).replace(":", "-")
    return REPO / "DATA" / "splits" / f"{name}_{tag}_seed{int(seed)}.json"


def get_split(pairs: Sequence[Pair], split_path: str | Path | None, ratio: str, seed: int,
              data_root: str | Path, log: Callable[[str], None] = print) -> tuple[dict, Path]:
    """Load ``split_path``, or make and save the split there when it does not exist yet."""
    path = Path(split_path) if split_path else default_split_path(data_root, ratio, seed)
    if path.is_file():
        split = load_split(path)
        log(f"split: {path} (train {len(split['train'])}, test {len(split['test'])})")
        return split, path
    split = make_split(list(pairs), parse_ratio(ratio), int(seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_split(split, path)
    log(f"split: made {ratio} (seed {seed}) -> {path} (train {len(split['train'])}, "
        f"test {len(split['test'])})")
    return split, path


def split_pairs(data_root: str | Path, split_path: str | Path | None, ratio: str, seed: int,
                categories=None, log: Callable[[str], None] = print):
    """``(train_pairs, test_pairs, split_path)`` of a paired dataset folder."""
    pairs = find_pairs(data_root, categories)
    split, path = get_split(pairs, split_path, ratio, seed, data_root, log)
    try:
        return subset_pairs(pairs, split["train"]), subset_pairs(pairs, split["test"]), path
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
