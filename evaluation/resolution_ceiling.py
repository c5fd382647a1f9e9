"""How much defect contrast survives a generator's resolution? Real pairs through a round trip.

    python -m evaluation.resolution_ceiling --real ../shared/data/SD-saliency-900 --sizes 64 96 128
    python -m evaluation.resolution_ceiling --real ../shared/data/SD-saliency-900 --sizes 64 \
        --upscaler OUTPUT/upscaler64.safetensors --split DATA/splits/SD-saliency-900_9-1_seed0_val0.json --subset test

A pixel-space generator trained at ``side`` px sees each real image resized to ``side`` (bicubic, as
in training) and writes its samples resized back to the stored size (bicubic, antialiased, as
``infer.py --output_size``). This sends the real images through that same round trip and measures
mask adherence (``evaluation.mask_adherence``: in-mask vs ring CNR) on the result against the
original masks: the contrast a perfect generator at that resolution could give back. Thin
scratches lose most; blobs keep theirs. Images must be square (SD-Saliency-900's are).

``--upscaler`` adds a row for the round trip through a mask-guided upscaler (``python -m training.upscaler``)
at its side, and a table of the round trips' error against the stored images (RMSE, grey levels in [0, 1]):
a sharper edge that is also closer to the stored image is given back, not invented. ``--split``/``--subset``
restrict the pairs (e.g. to the validation pairs an upscaler was not trained on).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from dataset.categories import categories_from_config
from dataset.files import IMAGE_EXTS, MASK_EXTS, list_by_stem
from dataset.folders import MaskReader, category_of, image_folder, mask_folder, read_gray
from dataset.io import write_json_atomic, write_png_atomic
from dataset.splits import load_split
from evaluation.mask_adherence import folder_contrasts, summarize
from ldm.checkpoint import read_upscaler
from ldm.modules.mask_upscaler import MaskUpscaler, upscale_images
from runtime.cli import image_side, int_in
from runtime.errors import UserError, run_cli


def round_trip(image: np.ndarray, side: int, mask: Optional[np.ndarray] = None,
               upscaler: Optional[MaskUpscaler] = None) -> np.ndarray:
    """uint8 (N, N) grey image -> resized to side x side and back, as a generator at ``side`` px (with
    ``upscaler``: back through it, along ``mask``)."""
    if image.shape[0] != image.shape[1]:
        raise UserError(f"the image is {image.shape[1]}x{image.shape[0]}, not square; the generator's "
                        "output is square, so crop the images to squares first")
    small = np.asarray(Image.fromarray(image).resize((side, side), Image.BICUBIC), np.float32) / 255.0
    masks = None if mask is None else torch.from_numpy(np.asarray(mask, bool))[None]
    with torch.no_grad():
        back = upscale_images(torch.from_numpy(small)[None, None], image.shape[0], masks, upscaler)
    return (back[0, 0].numpy() * 255.0).round().astype(np.uint8)


def _trip(side: int, upscaler: Optional[MaskUpscaler] = None):
    return lambda image, mask: round_trip(image, side, mask, upscaler)


def ceiling_table(root: str | Path, sizes: Sequence[int], ring: int = 6, upscaler: Optional[MaskUpscaler] = None,
                  stems: Optional[Sequence[str]] = None) -> dict[str, dict[str, float]]:
    """{"stored" | "<side> px" | "<side> px + upscaler": {category | "all": mean CNR of the real pairs}}."""
    cats = categories_from_config(None)
    rows = {"stored": folder_contrasts(root, cats, ring, stems=stems)}
    for side in sizes:
        rows[f"{side} px"] = folder_contrasts(root, cats, ring, transform=_trip(side), stems=stems)
    if upscaler is not None:
        rows[f"{upscaler.side} px + upscaler"] = folder_contrasts(root, cats, ring, _trip(upscaler.side, upscaler),
                                                                  stems)
    return {name: {cat: row["cnr_generated"] for cat, row in summarize(c).items()} for name, c in rows.items()}


def error_table(root: str | Path, upscaler: MaskUpscaler,
                stems: Optional[Sequence[str]] = None) -> dict[str, dict[str, float]]:
    """{"<side> px" | "<side> px + upscaler": {category | "all": mean RMSE against the stored image}}."""
    cats = categories_from_config(None)
    images = list_by_stem(image_folder(root), IMAGE_EXTS, "image", strict=False)
    masks = list_by_stem(mask_folder(root), MASK_EXTS, "mask", strict=False)
    reader = MaskReader()
    errors: dict[str, dict[str, list[float]]] = {}
    for stem in sorted(images.keys() & masks.keys() & set(stems if stems is not None else images)):
        image, mask = read_gray(images[stem]), reader(masks[stem])
        for name, trip in ((f"{upscaler.side} px", _trip(upscaler.side)),
                           (f"{upscaler.side} px + upscaler", _trip(upscaler.side, upscaler))):
            diff = (trip(image, mask).astype(np.float64) - image) / 255.0
            for group in (category_of(stem, cats), "all"):
                errors.setdefault(name, {}).setdefault(group, []).append(float(np.sqrt((diff ** 2).mean())))
    if not errors:
        raise UserError(f"{root}: no image/mask pair to measure (check --split and --subset)")
    order = ["all"] + [c.name for c in cats]
    return {name: {g: float(np.mean(row[g])) for g in order if g in row} for name, row in errors.items()}


def format_table(table: dict[str, dict[str, float]], digits: int = 2) -> str:
    cats = list(next(iter(table.values())))
    lines = ["| representation | " + " | ".join(cats) + " |", "|---|" + "---:|" * len(cats)]
    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join(f"{row.get(c, float('nan')):.{digits}f}" for c in cats) + " |")
    return "\n".join(lines)


def picture(root: str | Path, sizes: Sequence[int], stems: Sequence[str], path: str | Path, tile: int = 160) -> Path:
    """One row per stem: mask | stored image | the image through each round trip."""
    images = list_by_stem(image_folder(root), IMAGE_EXTS, "image", strict=False)
    masks = list_by_stem(mask_folder(root), MASK_EXTS, "mask", strict=False)
    missing = [s for s in stems if s not in images or s not in masks]
    if missing:
        raise UserError(f"{root}: no image/mask pair named {missing[0]!r}; pick --show from its file names")
    reader = MaskReader()
    rows = []
    for stem in stems:
        image = read_gray(images[stem])
        tiles = [reader(masks[stem]).astype(np.uint8) * 255, image] + [round_trip(image, s) for s in sizes]
        rows.append(np.concatenate([np.asarray(Image.fromarray(t).resize((tile, tile), Image.NEAREST))
                                    for t in tiles], axis=1))
    return write_png_atomic(Image.fromarray(np.concatenate(rows, axis=0)), path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evaluation.resolution_ceiling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", required=True, help="paired folder of real images and masks")
    p.add_argument("--sizes", type=image_side, nargs="+", default=[64, 96, 128],
                   help="generator sides in pixels (default: %(default)s)")
    p.add_argument("--ring", type=int_in(1, 256), default=6,
                   help="ring width in pixels at 256 px (default: %(default)s)")
    p.add_argument("--upscaler", help="a mask-guided upscaler file (python -m training.upscaler): add its round trip")
    p.add_argument("--split", help="split JSON: measure only its --subset pairs")
    p.add_argument("--subset", choices=("train", "test"), default="test",
                   help="which pairs of --split (default: %(default)s)")
    p.add_argument("--out", help="write the table as JSON here")
    p.add_argument("--picture", help="write a PNG of --show pairs here: mask | stored | each round trip")
    p.add_argument("--show", nargs="+", default=["In_1", "Pa_1", "Sc_1"], help="stems for --picture")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    stems = list(load_split(args.split)[args.subset]) if args.split else None
    upscaler = read_upscaler(args.upscaler) if args.upscaler else None
    table = ceiling_table(args.real, args.sizes, args.ring, upscaler, stems)
    print("mask CNR (in-mask vs ring contrast over the ring's noise)")
    print(format_table(table))
    if upscaler is not None:
        errors = error_table(args.real, upscaler, stems)
        print("RMSE against the stored images")
        print(format_table(errors, digits=4))
        table = {"cnr": table, "rmse": errors}
    if args.out:
        write_json_atomic(table, args.out)
    if args.picture:
        print(f"picture -> {picture(args.real, args.sizes, args.show, args.picture)}")
    return 0


if __name__ == "__main__":
    run_cli(main)
