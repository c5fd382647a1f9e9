"""The train/test split files shared by training and the protocols (made with dataset.splits)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Sequence

from dataset.pairs import Pair, find_pairs
from dataset.splits import load_split, make_split, parse_ratio, save_split, subset_pairs
from runtime.errors import UserError

from .config import REPO


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
