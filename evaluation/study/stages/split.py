"""The split stage: the study's train/test split and a copy of its training masks."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from dataset.files import few, natural_key
from dataset.folders import image_folder, mask_folder
from dataset.pairs import Pair, find_pairs
from dataset.splits import default_split_path, get_split, parse_ratio, save_split
from runtime.digest import file_sha256_or_none, folders_digest
from runtime.errors import UserError

from .. import leakage
from ..context import Ctx
from .base import Stage, remove_path


class SplitStage(Stage):
    """The study's train/test split (made on first use) and a copy of its training masks."""

    kind = "split"

    def split_path(self, ctx: Ctx) -> Path:
        study_cfg = ctx.study_config(self.study)
        if study_cfg["split"]:
            return Path(study_cfg["split"])
        return default_split_path(ctx.data_root, study_cfg["ratio"], study_cfg["seed"])

    def inputs(self, ctx: Ctx) -> dict[str, Any]:
        study_cfg = ctx.study_config(self.study)
        path = self.split_path(ctx)
        return {"data_root": ctx.data_root, "categories": ctx.cfg.get("categories"),
                "data": folders_digest([image_folder(ctx.data_root), mask_folder(ctx.data_root)]),
                "ratio": study_cfg["ratio"], "seed": study_cfg["seed"], "split": str(path),
                "split_sha256": file_sha256_or_none(path)}

    def masks_dir(self, ctx: Ctx) -> Path:
        return ctx.study_dir(self.study) / "train_masks"

    def clear(self, ctx: Ctx) -> list[Path]:
        return [self.masks_dir(ctx)]

    def run(self, ctx: Ctx) -> dict[str, Any]:
        study_cfg = ctx.study_config(self.study)
        pairs = find_pairs(ctx.data_root, ctx.categories)
        made = not self.split_path(ctx).is_file()
        split, path = get_split(pairs, self.split_path(ctx), study_cfg["ratio"], study_cfg["seed"], ctx.data_root,
                                ctx.log)
        check_split_matches(split, path, pairs, ctx.data_root, self.study, study_cfg["ratio"])
        by_stem = {p.stem: p for p in pairs}
        split = keep_copies_in_test(split, path, by_stem, made, ctx.log)
        masks = self.masks_dir(ctx)
        remove_path(masks)
        masks.mkdir(parents=True)
        for stem in split["train"]:
            shutil.copy2(by_stem[stem].mask, masks / by_stem[stem].mask.name)
        ctx.log(f"[{self.key}] {len(split['train'])} training / {len(split['test'])} test pairs ({path}); "
                f"training masks -> {masks}")
        return {"split": str(path), "split_sha256": file_sha256_or_none(path), "n_train": len(split["train"]),
                "n_test": len(split["test"]),
                "train_masks": str(masks), "paths": [str(path), str(masks)]}


def keep_copies_in_test(split: dict, path: Path, by_stem: dict[str, Pair], made: bool,
                        log: Callable[[str], None]) -> dict:
    """Training pairs whose image or mask has the pixels of a test item's: moved to the test side of a split
    made just now (and saved), refused in an existing split file."""
    tests = leakage.test_digests([by_stem[s] for s in split["test"]])
    copies = {s: tests.get(leakage.pixel_digest(by_stem[s].image)) or tests.get(leakage.pixel_digest(by_stem[s].mask))
              for s in split["train"]}
    copies = {s: what for s, what in copies.items() if what}
    if not copies:
        return split
    first = next(iter(copies))
    if not made:
        raise leakage.LeakError(f"leak: {path}: {len(copies)} training pair(s) have the pixels of a test item "
                                f"({first}: the {copies[first]}); move them to the test side of the split, or delete "
                                "the split file to make it anew (copies then go to the test side)")
    split = {**split, "train": [s for s in split["train"] if s not in copies],
             "test": sorted([*split["test"], *copies], key=natural_key)}
    save_split(split, path)
    log(f"{path}: {len(copies)} training pair(s) moved to the test side, their pixels equal a test item's "
        f"({', '.join(f'{s}: the {w}' for s, w in copies.items())})")
    return split


def check_split_matches(split: dict, path: Path, pairs: list[Pair], data_root: str, study: str, ratio: str) -> None:
    """A split file made for this dataset and this study's ratio, or a one-line error."""
    stems = {p.stem for p in pairs}
    listed = split["train"] + split["test"]
    missing = sorted((s for s in listed if s not in stems), key=natural_key)
    fix = (f"use the split made for this dataset, or set studies.{study}.split: null (or delete {path}) "
           "to make a new one")
    if missing:
        raise UserError(f"{path}: {len(missing)} sample(s) of the split are not in data_root {data_root} "
                        f"({few(missing)}); {fix}")
    unlisted = sorted(stems - set(listed), key=natural_key)
    if unlisted:
        raise UserError(f"{path}: {len(unlisted)} pair(s) of data_root {data_root} are in neither train nor test "
                        f"({few(unlisted)}); {fix}")
    want = parse_ratio(ratio)
    got = len(split["test"]) / max(1, len(listed))
    if abs(got - want) > max(0.02, 1.5 / max(1, len(listed))):
        raise UserError(f"{path}: {len(split['test'])} of {len(listed)} samples are test samples ({got:.3f}), but the "
                        f"{study} study is a {ratio} split ({want:.3f}); point studies.{study}.split at a {ratio} "
                        "split or set it to null")
