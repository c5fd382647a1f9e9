"""FID and KID between a real and a generated image folder, per category and overall: the command over
:mod:`metrics.fid` (where the features, the cache and the statistics live, below maskgen, whose report uses them).

    python -m evaluation.fid --real PATH/SD-saliency-900 --fake OUTPUT/generated [--out OUTPUT/fid]
"""
from __future__ import annotations

import argparse
from typing import Sequence

from dataset.files import IMAGE_EXTS, list_by_stem
from dataset.folders import image_folder
from metrics.fid import (
    DEFAULT_CACHE,
    INCEPTION_ENV,
    INCEPTION_FILE,
    InceptionFeatures,
    check_positive,
    compare_folders,
    format_rows,
)
from runtime.cli import add_categories, add_device
from runtime.device import pick_device
from runtime.errors import run_cli

FID_COLUMNS = ("category", "n_real", "n_fake", "FID", "KID", "KID_std", "KID_subset")


def add_fid_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inception", default=None,
                        help=f"path to {INCEPTION_FILE} (default: ${INCEPTION_ENV}, model_sem/, torch hub cache)")
    parser.add_argument("--cache_dir", default=str(DEFAULT_CACHE), help="feature cache folder (default %(default)s)")
    parser.add_argument("--no_cache", action="store_true", help="do not read or write the feature cache")
    parser.add_argument("--batch_size", type=int, default=32, help="images per Inception batch (default %(default)s)")
    parser.add_argument("--kid_subsets", type=int, default=100,
                        help="random subsets averaged for KID (default %(default)s)")
    parser.add_argument("--kid_subset_size", type=int, default=1000,
                        help="capped at the smaller set size (default %(default)s)")
    add_device(parser)
    add_categories(parser)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.fid",
                                     description="FID and KID per category and overall between a real and a "
                                                 "generated folder.")
    parser.add_argument("--real", required=True, help="real images: folder or paired dataset root")
    parser.add_argument("--fake", required=True, help="generated images: folder or paired layout")
    parser.add_argument("--out", default=None, help="write OUT.md and OUT.csv")
    add_fid_args(parser)
    args = parser.parse_args(argv)
    from .report import write_tables

    cats = None
    if args.categories:
        from dataset.categories import load_categories_yaml
        cats = load_categories_yaml(args.categories)
    # check the values and folders before loading Inception, so a typo fails fast
    check_positive(batch_size=args.batch_size, kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size)
    pick_device(args.device)
    list_by_stem(image_folder(args.real), IMAGE_EXTS, "image", strict=False)
    list_by_stem(image_folder(args.fake), IMAGE_EXTS, "image", strict=False)
    extractor = InceptionFeatures(args.inception, args.device)
    rows = compare_folders(args.real, args.fake, extractor, cats,
                           None if args.no_cache else args.cache_dir,
                           batch_size=args.batch_size, kid_subsets=args.kid_subsets,
                           kid_subset_size=args.kid_subset_size)
    print(format_rows(rows))
    if args.out:
        md, csv_path = write_tables(rows, FID_COLUMNS, args.out, title=f"FID / KID: {args.fake} vs {args.real}",
                                    bold_best=())
        print(f"wrote {md} and {csv_path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
