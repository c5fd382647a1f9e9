"""How demanding the realism card's targets are on a held-out set, before anything is generated.

``python -m evaluation.realism.real_sample --real R --real_split S`` scores seeded sets of the split's training
images, as many per category as its held-out part has, against that held-out part exactly as a card scores
generated images (:mod:`.reference`): per target the median value a set of new real images gets and how often it
meets the target. Writes ``STEM.md`` and ``STEM.json`` (default ``STEM``: ``real_sample`` beside the split).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from dataset.categories import categories_from_config
from dataset.io import write_json_atomic
from dataset.splits import load_split
from runtime.atomic import write_text_atomic
from runtime.cli import add_seed, add_threads, non_negative_int, positive_int
from runtime.errors import UserError, run_cli

from .build import Inputs, real_sample_reference, stacks
from .card import jsonable, real_sample_lines
from .data import attach_masks, category_order, default_side, list_set, read_set
from .fwd import auto_level, fwd_table
from .metrics import image_cnrs
from .reference import DRAWS, FWD_DRAWS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evaluation.realism.real_sample", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", required=True, type=Path, help="real pairs (Source_Images/ + Ground_truth/)")
    p.add_argument("--real_split", required=True, type=Path,
                   help="split JSON (dataset.splits): its test part is the held-out set, its train part the pool")
    p.add_argument("--out", type=Path, help="output stem (default: <split folder>/real_sample_<split name>)")
    p.add_argument("--size", type=positive_int, help="common image side in px (default: the real images' side)")
    p.add_argument("--fwd_draws", type=positive_int, default=3,
                   help="random real halves for the FWD floor, as in the card (default: %(default)s)")
    p.add_argument("--ref_draws", type=non_negative_int, default=DRAWS,
                   help="draws for the brightness and CNR targets (default: %(default)s)")
    p.add_argument("--ref_fwd_draws", type=non_negative_int, default=FWD_DRAWS,
                   help="draws for the FWD target (default: %(default)s)")
    p.add_argument("--ring", type=positive_int, default=6, help="CNR ring width at 256 px (default: %(default)s)")
    add_seed(p, help="seed of the real halves and the draws")
    add_threads(p)
    return p


def reference_of_split(args: argparse.Namespace) -> dict:
    """The real-sample reference of the split's held-out part against its training part."""
    if not (args.ref_draws or args.ref_fwd_draws):
        raise UserError("--ref_draws and --ref_fwd_draws are both 0: nothing to draw; give either a positive count")
    cats = categories_from_config(None)
    split = load_split(args.real_split)
    real = read_set(list_set(args.real, "real", cats, split["test"]))
    train = read_set(attach_masks(list_set(args.real, "training", cats, split["train"], with_masks=False)))
    size = args.size or default_side(real.images)
    inputs = Inputs(real, real, train, category_order(cats, real.categories), size, auto_level(size), args.seed,
                    args.fwd_draws, args.ring, args.ref_draws, args.ref_fwd_draws)
    s = stacks(inputs)
    fwd = fwd_table(real, s.real_x, real, s.real_x, s.real_groups, s.real_groups, inputs.categories, inputs.level,
                    inputs.seed, inputs.draws)
    warnings: list[str] = []
    ref = real_sample_reference(inputs, s, s.real_x.mean(axis=(1, 2)), image_cnrs(real, args.ring), fwd, warnings)
    return {"inputs": {"real": str(args.real), "split": str(args.real_split), "n_real": len(real),
                       "n_train": len(train)},
            "settings": {"size": size, "seed": args.seed, "ring": args.ring, "fwd_draws": args.fwd_draws},
            "floors": {c: row["floor"] for c, row in fwd.items()}, "reference": ref, "warnings": warnings}


def markdown(result: dict) -> str:
    inp = result["inputs"]
    lines = ["# What a real sample scores", "",
             f"- held-out set: the test part of `{inp['split']}` in `{inp['real']}` ({inp['n_real']} pairs)",
             f"- pool: its training part ({inp['n_train']} images)",
             f"- images compared at {result['settings']['size']} px grey; seed {result['settings']['seed']}", ""]
    lines += real_sample_lines(result["reference"])
    if result["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in result["warnings"]]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = reference_of_split(args)
    stem = args.out or args.real_split.parent / f"real_sample_{args.real_split.stem}"
    text = markdown(result)
    write_text_atomic(text, stem.with_name(stem.name + ".md"))
    write_json_atomic(jsonable(result), stem.with_name(stem.name + ".json"))
    print(text, end="")
    print(f"wrote {stem}.md and {stem}.json")
    return 0


if __name__ == "__main__":
    run_cli(main)
