"""Sample filter (DefFiller README, guideline 3): keep generated pairs a trained detector agrees with.

A saliency detector predicts a map for each generated image; the map is binarised (default 0.5)
and compared with the mask the image was generated from. Pairs with IoU >= threshold (default
0.6) are copied to the output folder in the same paired layout; ``filter_iou.csv`` lists every
pair's IoU and verdict, ``filter.json`` the settings and counts.

    python -m evaluation.sample_filter --ckpt OUTPUT/detector/detector.safetensors \
        --generated generation_samples/sd900_gen --out generation_samples/sd900_gen_filtered
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from dataset.files import IMAGES_DIR, MASKS_DIR, few
from dataset.folders import MaskReader, resize_map
from dataset.io import write_json_atomic
from dataset.pairs import Pair, find_pairs
from metrics.sod import binary_iou
from runtime.atomic import copy_atomic, write_text_atomic
from runtime.cli import add_device, finite_float
from runtime.errors import UserError, run_cli
from runtime.lock import locked

from .report import csv_text

#: present in the output folder from the first copy until ``filter.json`` is written: the same command rebuilds
#: the output of a run that stopped in between without --overwrite
UNFINISHED = ".filter_unfinished"
#: predict(paths) -> probability maps in [0, 1], one per path, in order
Predictor = Callable[[Sequence[Path]], Iterable[np.ndarray]]


def score_pairs(pairs: Sequence[Pair], predict: Predictor, bin_threshold: float = 0.5,
                log: Callable[[str], None] = print) -> list[dict]:
    """``[{stem, category, iou, mask_area}]``: IoU of each binarised prediction with its mask."""
    reader = MaskReader()
    rows = []
    maps: Iterator[np.ndarray] = iter(predict([p.image for p in pairs]))
    for pair in pairs:
        prob = np.asarray(next(maps), np.float32)
        mask = reader(pair.mask)
        if prob.shape != mask.shape:
            prob = resize_map(np.clip(prob * 255 + 0.5, 0, 255).astype(np.uint8), mask.shape) / 255.0
        iou = binary_iou(prob >= bin_threshold, mask)
        rows.append({"stem": pair.stem, "category": pair.category.name, "iou": iou,
                     "mask_area": float(mask.mean())})
    reader.report(log, "conditioning mask")
    return rows


def _files(folder: Path) -> list[Path]:
    return [f for f in folder.iterdir() if f.is_file() or f.is_symlink()] if folder.is_dir() else []


def _stems_in_csv(path: Path) -> set[str]:
    """Stems listed in an earlier run's ``filter_iou.csv`` (empty when there is none)."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return {row["stem"] for row in csv.DictReader(fh) if row.get("stem")}
    except (OSError, UnicodeDecodeError, csv.Error, KeyError):
        return set()


def _read_object(path: Path) -> dict | None:
    """A JSON object file, or None when it is missing or not an object (then it is not copied)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_records(generated: Path, out: Path, kept: Sequence[Pair]) -> None:
    """``generation.json`` and ``caption.json`` of ``generated`` narrowed to the kept pairs (every record
    names a pair of the folder); one that cannot be read is dropped, not copied."""
    stems = {p.stem for p in kept}
    files = {p.image.name for p in kept}
    for name in ("generation.json", "caption.json"):
        target = out / name
        data = _read_object(generated / name)
        if data is None:
            if target.is_file() or target.is_symlink():
                target.unlink()  # an earlier run's record would list pairs this run did not keep
            continue
        if name == "generation.json":
            images = data.get("images") if isinstance(data.get("images"), dict) else {}
            data = {**data, "images": {k: v for k, v in images.items() if k in stems}}
        else:
            data = {k: v for k, v in data.items() if k in files}
        write_json_atomic(data, target)


def filter_samples(generated: str | Path, out: str | Path, predict: Predictor, threshold: float = 0.6,
                   bin_threshold: float = 0.5, categories=None, overwrite: bool = False,
                   log: Callable[[str], None] = print) -> dict:
    """Score every pair of ``generated``, copy those with IoU >= ``threshold`` into ``out`` (under its lock)."""
    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"--threshold {threshold} must lie in [0, 1]")
    if not 0.0 < bin_threshold < 1.0:
        raise UserError(f"--bin_threshold {bin_threshold} must lie in (0, 1)")
    generated, out = Path(generated), Path(out)
    if out.resolve() == generated.resolve():
        raise UserError(f"{out}: the output folder must differ from the generated folder")
    with locked(out, "choose another --out"):  # one writer per output folder
        return _filter_into(generated, out, predict, threshold, bin_threshold, categories, overwrite, log)


def _filter_into(generated: Path, out: Path, predict: Predictor, threshold: float, bin_threshold: float,
                 categories, overwrite: bool, log: Callable[[str], None]) -> dict:
    pairs = find_pairs(generated, categories)
    img_out, mask_out = out / IMAGES_DIR, out / MASKS_DIR
    marker = out / UNFINISHED  # an earlier run that stopped (full disk, kill) left it: its output is rebuilt
    for folder in (img_out, mask_out):
        if folder.is_dir() and any(folder.iterdir()) and not overwrite and not marker.is_file():
            raise UserError(f"{folder}: not empty; choose a fresh --out or pass --overwrite")
    known = {p.stem for p in pairs} | _stems_in_csv(out / "filter_iou.csv")
    for folder in (img_out, mask_out):
        foreign = [f.name for f in _files(folder) if f.stem not in known]
        if foreign:
            raise UserError(f"{folder}: holds files this filter did not write ({few(foreign)}); "
                            "choose a fresh --out or remove them")
    for folder in (img_out, mask_out):
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise UserError(f"{folder}: not a folder of this output (a link or a file); choose a fresh --out or "
                            "remove it")
    rows = score_pairs(pairs, predict, bin_threshold, log)
    write_text_atomic("", marker)
    (out / "filter.json").unlink(missing_ok=True)  # it would describe the output this run replaces
    img_out.mkdir(parents=True, exist_ok=True)
    mask_out.mkdir(parents=True, exist_ok=True)
    kept_names: set[str] = set()
    kept_pairs = []
    for pair, row in zip(pairs, rows):
        row["kept"] = row["iou"] >= threshold
        if row["kept"]:
            copy_atomic(pair.image, img_out / pair.image.name)  # replaces a planted link, never writes through it
            copy_atomic(pair.mask, mask_out / pair.mask.name)
            kept_names.update((pair.image.name, pair.mask.name))
            kept_pairs.append(pair)
    kept = sum(int(r["kept"]) for r in rows)
    for folder in (img_out, mask_out):  # pairs an earlier run kept that this one rejects
        for stale in _files(folder):
            if stale.name not in kept_names:
                stale.unlink()
    write_records(generated, out, kept_pairs)
    write_text_atomic(csv_text(rows, ["stem", "category", "iou", "mask_area", "kept"]), out / "filter_iou.csv")
    per_cat: dict[str, list[int]] = {}
    for row in rows:
        per_cat.setdefault(row["category"], [0, 0])
        per_cat[row["category"]][0] += int(row["kept"])
        per_cat[row["category"]][1] += 1
    summary = {"generated": str(generated), "threshold": threshold, "bin_threshold": bin_threshold,
               "total": len(rows), "kept": kept,
               "per_category": {k: {"kept": v[0], "total": v[1]} for k, v in per_cat.items()},
               "mean_iou": float(np.mean([r["iou"] for r in rows]))}
    write_json_atomic(summary, out / "filter.json")
    marker.unlink()
    log(f"kept {kept}/{len(rows)} pairs with IoU >= {threshold} -> {out} "
        + "(" + ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in per_cat.items()) + ")")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.sample_filter",
                                     description="Keep generated pairs whose detector prediction matches the "
                                                 "mask (IoU >= threshold).")
    parser.add_argument("--ckpt", required=True,
                        help="detector.safetensors (or its run folder) from evaluation.detector.train")
    parser.add_argument("--generated", required=True, help="generated pairs (Source_Images/ + Ground_truth/)")
    parser.add_argument("--out", required=True, help="output folder for the kept pairs")
    parser.add_argument("--threshold", type=finite_float, default=0.6, help="minimum IoU to keep (default 0.6)")
    parser.add_argument("--bin_threshold", type=finite_float, default=0.5, help="map binarisation level (default 0.5)")
    parser.add_argument("--overwrite", action="store_true", help="allow a non-empty --out")
    add_device(parser, None, "auto")
    args = parser.parse_args(argv)
    from .detector.predict import Detector

    detector = Detector(args.ckpt, args.device)
    filter_samples(args.generated, args.out, lambda paths: detector(paths, progress=True),
                   args.threshold, args.bin_threshold, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    run_cli(main)
