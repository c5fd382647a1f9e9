"""Mask | real | generated grids: the same masks, the real image and what each generator drew from them.

    python -m evaluation.realism.grid --real DATA/SD-saliency-900 --generated G1 [G2 ...] [--labels A B]
        [--per_category 3] [--seed 0] --out grid.png

Rows are masks picked at random (seeded) per category among those every generated set holds; a
generated stem ``In_12_s0`` counts for the real pair ``In_12`` (its first sample is shown).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from dataset.files import source_stem
from dataset.pairs import Pair, find_pairs
from evaluation.pictures import picture_grid
from runtime.errors import UserError, run_cli


def _by_base(pairs: Sequence[Pair]) -> dict[str, Pair]:
    out: dict[str, Pair] = {}
    for p in pairs:  # naturally sorted: In_12_s0 before In_12_s1
        out.setdefault(source_stem(p.stem), p)
    return out


def pick_rows(real: Sequence[Pair], generated: Sequence[Sequence[Pair]], per_category: int,
              seed: int = 0) -> list[list[Path]]:
    """``[mask, real image, generated image per set]`` rows, ``per_category`` per category present."""
    real_by = {p.stem: p for p in real}
    gens = [_by_base(g) for g in generated]
    common = [s for s in gens[0] if s in real_by and all(s in g for g in gens[1:])]
    if not common:
        raise UserError("no mask is in the real set and in every generated set; pass the generated folders made "
                        "from the real set's masks")
    rng = np.random.default_rng(seed)
    rows = []
    for cat in dict.fromkeys(real_by[s].category.name for s in common):
        stems = [s for s in common if real_by[s].category.name == cat]
        for i in sorted(rng.choice(len(stems), size=min(per_category, len(stems)), replace=False)):
            s = stems[i]
            rows.append([real_by[s].mask, real_by[s].image] + [g[s].image for g in gens])
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", type=Path, required=True, help="real image/mask pairs (the masks the sets were made from)")
    p.add_argument("--generated", type=Path, nargs="+", required=True, help="generated pair folders (infer.py)")
    p.add_argument("--labels", nargs="+", default=None, help="one column title per generated folder")
    p.add_argument("--per_category", type=int, default=3, help="rows per category (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="which masks are picked (default: %(default)s)")
    p.add_argument("--thumb", type=int, default=128, help="tile side in pixels (default: %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = p.parse_args(argv)
    if args.labels is not None and len(args.labels) != len(args.generated):
        raise UserError(f"--labels: {len(args.labels)} labels for {len(args.generated)} generated folders")
    if not 1 <= args.per_category <= 50 or not 16 <= args.thumb <= 512:
        raise UserError("--per_category must be 1..50 and --thumb 16..512 pixels")
    real = find_pairs(args.real, check_sizes=False)
    generated = [find_pairs(g, check_sizes=False) for g in args.generated]
    rows = pick_rows(real, generated, args.per_category, args.seed)
    labels = args.labels or [g.name for g in args.generated]
    picture_grid(rows, ["mask", "real", *labels], args.out, thumb=args.thumb)
    print(f"wrote {args.out} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    run_cli(main)
