"""Command line of the realism card: read the sets, build the card, write it, print a summary."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional

from dataset.categories import categories_from_config
from dataset.splits import load_split
from runtime.cli import add_seed, add_threads, non_negative_int, positive_int
from runtime.errors import UserError

from .build import Inputs, build_card, stacks
from .card import write_card
from .data import ImageSet, attach_masks, category_order, check_categories, default_side, list_set, read_set
from .fwd import auto_level
from .reference import DRAWS, FWD_DRAWS, counted_met, generated_met
from .thresholds import COUNTED_RATE


def build_parser() -> argparse.ArgumentParser:
    from . import __doc__ as usage

    p = argparse.ArgumentParser(prog="python -m evaluation.realism", description=usage,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", required=True, type=Path, help="real pairs (Source_Images/ + Ground_truth/)")
    p.add_argument("--generated", required=True, type=Path, help="generated pairs written by infer.py")
    p.add_argument("--train", type=Path, help="real training images, for the memorisation check (optional)")
    p.add_argument("--real_split", type=Path, help="split JSON (dataset.splits): use only its --real_part of --real "
                   "(for a carve_validation split, test is the validation set)")
    p.add_argument("--real_part", choices=("test", "train"), default="test",
                   help="which part of --real_split is the real set (default: %(default)s); with 'test' and no "
                        "--train, the split's training part of --real is the training set")
    p.add_argument("--out", type=Path, help="output folder (default: <generated>/realism)")
    p.add_argument("--size", type=positive_int, help="common image side in px (default: the real images' side)")
    p.add_argument("--fwd_level", type=positive_int,
                   help="wavelet packet level (default: 4, deeper above 128 px so packets stay <= 8 px)")
    p.add_argument("--fwd_draws", type=positive_int, default=3,
                   help="random real halves for the FWD floor (default: %(default)s)")
    p.add_argument("--ref_draws", type=non_negative_int, default=DRAWS,
                   help="draws of real training sets for the real-sample reference (default: %(default)s; 0: none)")
    p.add_argument("--ref_fwd_draws", type=non_negative_int, default=FWD_DRAWS,
                   help="draws of real training sets for the real-sample FWD reference (default: %(default)s; "
                        "0: none)")
    p.add_argument("--ring", type=positive_int, default=6, help="CNR ring width at 256 px (default: %(default)s)")
    add_seed(p, help="seed of the real halves and the example tiles")
    add_threads(p)
    return p


def load_inputs(args: argparse.Namespace) -> Inputs:
    """List everything (cheap checks first), then read the images."""
    cats = categories_from_config(None)
    real_stems = train_stems = None
    if args.real_split is not None:
        split = load_split(args.real_split)
        real_stems = split[args.real_part]
        if args.train is None and args.real_part == "test":
            train_stems = split["train"]
    real = list_set(args.real, "real", cats, real_stems)
    generated = list_set(args.generated, "generated", cats)
    check_categories(real, generated)
    train: Optional[ImageSet] = None
    if args.train is not None or train_stems is not None:
        train = attach_masks(list_set(args.train or args.real, "training", cats, train_stems, with_masks=False))
    for image_set in (real, generated, train):
        if image_set is not None:
            read_set(image_set)
    size = args.size or default_side(real.images)
    return Inputs(real, generated, train, category_order(cats, real.categories), size,
                  args.fwd_level or auto_level(size), args.seed, args.fwd_draws, args.ring, args.ref_draws,
                  args.ref_fwd_draws)


def summary(card: dict) -> str:
    """A few lines for the terminal: per category the headline numbers and the targets not met."""
    lines = [f"{'category':12s} {'KS':>6s} {'spread':>7s} {'CNR x':>6s} {'FWD/floor':>9s} {'memo':>6s}"]
    for c in card["categories"]:
        b, n, f = card["brightness"][c], card["cnr"][c], card["fwd"][c]
        m = (card["memorisation"] or {}).get(c)
        memo = "-" if not m or m["possible_memorisation"] is None else ("FLAG" if m["possible_memorisation"] else "ok")
        lines.append(f"{c:12s} {b['ks']:6.2f} {b['spread_ratio']:7.2f} {n['ratio']:6.2f} {f['ratio']:9.2f} {memo:>6s}")
    missed = [f"{t['category']}: {t['target']}" for t in card["targets"] if t["met"] is False]
    lines.append(f"targets not met: {len(missed)} of {len(card['targets'])}")
    ref = (card.get("reference") or {}).get("targets_met")
    if ref:
        lines.append(f"a real sample of the same size meets {ref['mean']:.1f} of {ref['of']} brightness and CNR "
                     f"targets on average ({ref['p5']:.0f}-{ref['p95']:.0f}); this set meets {generated_met(card)}")
    ref_fwd = (card.get("reference") or {}).get("fwd")
    if ref_fwd:
        lines.append("a real sample's FWD/floor, median (within the line in % of draws): " + ", ".join(
            f"{c} {r['median']:.2f} ({100 * r['met']:.0f} %)" for c, r in ref_fwd.items() if r["draws"]))
    counted = counted_met(card)
    if counted:
        lines.append(f"targets that a real sample meets in at least {100 * COUNTED_RATE:.0f} % of draws (and "
                     f"memorisation): this set meets {counted[0]} of {counted[1]}")
    return "\n".join(lines + [f"warning: {w}" for w in card["warnings"]])


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.real_split is None and args.real_part != "test":
        raise UserError("--real_part needs --real_split FILE; pass the split JSON or drop --real_part")
    start = time.perf_counter()
    inputs = load_inputs(args)
    s = stacks(inputs)
    card = build_card(inputs, s)
    card["seconds"] = time.perf_counter() - start
    out = args.out or args.generated / "realism"
    paths = write_card(card, out, inputs.real, inputs.generated, s, args.seed)
    print(summary(card))
    print(f"realism card ({card['seconds']:.1f} s):")
    for path in paths:
        print(f"  {path}")
    return 0
