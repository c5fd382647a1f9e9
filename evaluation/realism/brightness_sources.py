"""Where a generator's spread of brightness comes from, from several samples per mask.

    python -m evaluation.realism.brightness_sources --generated G --real DATA/SD-saliency-900 [--out F.md]

``--generated`` holds pairs written by ``infer.py --num_per_mask K`` (K >= 2: stems ``In_12_s0`` ...);
``--real`` the real pairs whose masks they were made from. Per category, over each image's mean grey
level in [0, 1]: the real images' standard deviation; the generated images' total standard deviation,
split into the part between masks (sd of each mask's mean over its samples) and the part within a mask
(pooled sd over the samples of one mask, i.e. what the noise seed changes); and the correlation of each
mask's generated brightness with its real image's. A generator that learned each training mask's
brightness shows a high correlation on training masks and a small within-mask part.
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path
from typing import Optional

import numpy as np

from dataset.categories import categories_from_config
from dataset.files import IMAGE_EXTS, list_by_stem, source_stem
from dataset.folders import category_of, image_folder, read_gray
from runtime.atomic import write_text_atomic
from runtime.errors import UserError, run_cli


def mean_grey(path: Path) -> float:
    return float(read_gray(path).mean()) / 255.0


def decompose(real: dict[str, float], generated: dict[str, list[float]]) -> dict[str, float]:
    """The numbers of one category: ``real`` is ``{mask stem: brightness}``, ``generated`` ``{mask stem:
    [brightness of each sample]}`` (at least two samples per mask)."""
    stems = [s for s in generated if s in real]
    per_mask = [np.asarray(generated[s]) for s in stems]
    every = np.concatenate(per_mask)
    mask_means = np.array([g.mean() for g in per_mask])
    r = np.array([real[s] for s in stems])
    with np.errstate(invalid="ignore", divide="ignore"):  # nan where either side does not vary
        corr = float(np.corrcoef(mask_means, r)[0, 1])
    return {"masks": len(stems), "samples": len(every), "real_mean": float(r.mean()), "real_sd": float(r.std(ddof=1)),
            "gen_mean": float(every.mean()), "gen_sd": float(every.std(ddof=1)),
            "between_sd": float(mask_means.std(ddof=1)),
            "within_sd": float(np.sqrt(np.mean([g.var(ddof=1) for g in per_mask]))),
            "corr_with_real": corr}


def table(rows: dict[str, dict[str, float]]) -> str:
    lines = ["| category | masks x samples | real mean (sd) | generated mean (sd) | sd ratio | between-mask sd | "
             "within-mask sd | corr. with the real image |", "|---|---|---|---|---|---|---|---|"]
    for cat, d in rows.items():
        lines.append(f"| {cat} | {d['masks']} x {d['samples'] // d['masks']} | {d['real_mean']:.3f} "
                     f"({d['real_sd']:.3f}) | {d['gen_mean']:.3f} ({d['gen_sd']:.3f}) | "
                     f"{d['gen_sd'] / d['real_sd']:.2f} | {d['between_sd']:.3f} | {d['within_sd']:.3f} | "
                     f"{d['corr_with_real']:+.2f} |")
    return "\n".join(lines) + "\n"


def brightness_sources(generated_root: Path, real_root: Path) -> dict[str, dict[str, float]]:
    """:func:`decompose` per category of ``generated_root``'s masks."""
    cats = categories_from_config(None)
    gen_files = list_by_stem(image_folder(generated_root), IMAGE_EXTS, "generated image", strict=False)
    real_files = list_by_stem(image_folder(real_root), IMAGE_EXTS, "real image", strict=False)
    samples: dict[str, list[float]] = defaultdict(list)
    for stem, path in gen_files.items():
        samples[source_stem(stem)].append(mean_grey(path))
    missing = [s for s in samples if s not in real_files]
    if missing:
        raise UserError(f"{real_root}: no real image for generated mask(s) {', '.join(missing[:5])}; pass the real "
                        "pairs the masks came from as --real")
    if min(len(v) for v in samples.values()) < 2:
        raise UserError(f"{generated_root}: every mask needs at least two samples (infer.py --num_per_mask 2 or "
                        "more) to split the spread into its parts")
    by_cat: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for stem, values in samples.items():
        by_cat[category_of(stem, cats)][stem] = values
    return {cat: decompose({s: mean_grey(real_files[s]) for s in gen}, gen)
            for cat, gen in by_cat.items() if len(gen) >= 3}


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluation.realism.brightness_sources",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generated", required=True, type=Path, help="pairs from infer.py --num_per_mask K (K >= 2)")
    p.add_argument("--real", required=True, type=Path, help="the real pairs (or images) the masks came from")
    p.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = p.parse_args(argv)
    text = table(brightness_sources(args.generated, args.real))
    print(text, end="")
    if args.out:
        write_text_atomic(text, args.out)
    return 0


if __name__ == "__main__":
    run_cli(main)
