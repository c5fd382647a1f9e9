"""Saliency-detection metrics of a folder of predicted maps against a folder of ground truths.

    python -m evaluation.sod_eval --pred OUTPUT/maps --gt PATH/SD-saliency-900 \
        [--split DATA/splits/x.json --subset test] [--out OUTPUT/metrics/sod]

Files are matched by name without extension. Prints S (alpha 0.5), MAE, max E-measure,
max F-measure (beta^2 0.3), mean IoU and Dice per category and overall; ``--out STEM`` writes
``STEM.md`` and ``STEM.csv``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Iterable, Sequence

from dataset.folders import load_map_pairs
from metrics.sod import METRICS, GroupedSODMetrics, format_results
from runtime.cli import add_categories
from runtime.errors import run_cli

from .report import write_tables


def evaluate_folders(pred_dir: str | Path, gt_dir: str | Path, categories=None,
                     stems: Iterable[str] | None = None, strict: bool = False,
                     log: Callable[[str], None] = print, per_image: dict[str, float] | None = None) -> dict:
    """``{group: {metric: value, "n": count}}`` (per category, then ``overall``); a ``per_image`` dict is
    filled with every image's S by stem."""
    maps = load_map_pairs(pred_dir, gt_dir, categories, stems, strict, log)
    acc = GroupedSODMetrics()
    for pred, gt, group in zip(maps.preds, maps.gts, maps.groups):
        acc.step(pred, gt, group)
    if per_image is not None:
        per_image.update(zip(maps.stems, acc.overall.per_image_s()))
    return acc.results()


def results_rows(results: dict, **extra) -> list[dict]:
    return [{**extra, "category": g, **r} for g, r in results.items()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.sod_eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pred", required=True, help="folder of predicted maps (grey PNG/BMP/JPG)")
    parser.add_argument("--gt", required=True, help="folder of ground-truth masks, or a dataset root")
    parser.add_argument("--split", default=None, help="split JSON: evaluate only its --subset stems")
    parser.add_argument("--subset", default="test", choices=("train", "test"), help="split part (default test)")
    add_categories(parser)
    parser.add_argument("--strict", action="store_true",
                        help="fail on unmatched names or non-binary masks instead of noting them")
    parser.add_argument("--out", default=None, help="write OUT.md and OUT.csv")
    args = parser.parse_args(argv)
    cats = None
    if args.categories:
        from dataset.categories import load_categories_yaml
        cats = load_categories_yaml(args.categories)
    stems = None
    if args.split:
        from dataset.splits import load_split
        stems = load_split(args.split)[args.subset]
    results = evaluate_folders(args.pred, args.gt, cats, stems, args.strict)
    print(format_results(results))
    if args.out:
        md, csv_path = write_tables(results_rows(results), ["category", "n", *METRICS], args.out,
                                    title=f"Saliency metrics: {args.pred}", bold_best=())
        print(f"wrote {md} and {csv_path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
