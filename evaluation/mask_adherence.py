"""Do generated defects follow their masks? In-mask vs surrounding-ring contrast, real vs generated.

    python -m evaluation.mask_adherence --generated generation_samples/demo --real OUTPUT/demo/procedural

For every image/mask pair: ``delta`` = mean grey level inside the mask minus the mean in a ring
just outside it (``--ring`` pixels wide, at a 256-pixel reference scale), and ``cnr`` = |delta| /
the ring's standard deviation (a contrast-to-noise ratio: 0 means nothing distinguishes the masked
region). With ``--real`` the generated pairs are matched to real pairs by file stem and the report
adds, per category, the fraction of pairs whose contrast has the real image's sign and the
correlation of the two deltas. This is a cheap proxy, not a perceptual metric: it sees a dark
inclusion or a bright scratch in the right place, not whether its texture is realistic.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from dataset.categories import categories_from_config
from dataset.files import IMAGE_EXTS, MASK_EXTS, few, list_by_stem
from dataset.folders import MaskReader, category_of, image_folder, mask_folder, match_by_stem, read_gray
from dataset.io import write_json_atomic
from runtime.cli import int_in
from runtime.errors import UserError, run_cli

REFERENCE_SIDE = 256


@dataclass
class Contrast:
    delta: float   # mean inside - mean in the ring, grey levels 0..255
    cnr: float     # |delta| / std in the ring


def defect_contrast(image: np.ndarray, mask: np.ndarray, ring: int = 6, where: str = "image") -> Optional[Contrast]:
    """Contrast of the masked region against a ring around it; ``None`` for an empty/full mask.

    ``ring`` is in pixels of a 256-pixel image and scales with the image side.
    """
    mask = mask.astype(bool)
    if image.shape != mask.shape:
        raise UserError(f"{where}: image {image.shape[::-1]} and mask {mask.shape[::-1]} differ in size; "
                        "write masks at the image size")
    width = max(1, round(ring * max(mask.shape) / REFERENCE_SIDE))
    outer = ndimage.binary_dilation(mask, iterations=width) & ~mask
    if not mask.any() or not outer.any():
        return None
    inside, around = image[mask].astype(np.float64), image[outer].astype(np.float64)
    delta = float(inside.mean() - around.mean())
    return Contrast(delta, abs(delta) / max(float(around.std()), 1.0))


def folder_contrasts(root: str | Path, categories, ring: int = 6,
                     transform: Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]] = None,
                     stems: Optional[Sequence[str]] = None) -> dict[str, tuple[str, Contrast]]:
    """stem -> (category name, contrast) for every image/mask pair of a paired folder (or those in ``stems``).

    ``transform`` (grey array, bool mask -> grey array of the same size) is applied to each image first.
    """
    images = list_by_stem(image_folder(root), IMAGE_EXTS, "image", strict=False)
    masks = list_by_stem(mask_folder(root), MASK_EXTS, "mask", strict=False)
    matched = match_by_stem(images, masks, "image", "mask")
    wanted = matched.stems if stems is None else [s for s in matched.stems if s in set(stems)]
    reader = MaskReader()
    out = {}
    for stem in wanted:
        image, mask = read_gray(images[stem]), reader(masks[stem])
        if transform is not None:
            try:
                image = transform(image, mask)
            except UserError as exc:
                raise UserError(f"{images[stem]}: {exc}") from None
        c = defect_contrast(image, mask, ring, where=str(images[stem]))
        if c is not None:
            out[stem] = (category_of(stem, categories), c)
    reader.report()
    if not out:
        raise UserError(f"{root}: no pair with a non-empty mask to measure")
    return out


def differing_masks(generated_root: str | Path, real_root: str | Path, stems: Sequence[str],
                    min_iou: float = 0.9) -> list[str]:
    """Stems whose generated and real masks are not the same mask (IoU below ``min_iou``).

    A generated mask written at another size is resized (nearest) to the real one first.
    """
    gen = list_by_stem(mask_folder(generated_root), MASK_EXTS, "mask", strict=False)
    real = list_by_stem(mask_folder(real_root), MASK_EXTS, "mask", strict=False)
    reader = MaskReader()
    bad = []
    for stem in stems:
        g, r = reader(gen[stem]), reader(real[stem])
        if g.shape != r.shape:
            g = np.asarray(Image.fromarray(g.astype(np.uint8) * 255).resize(r.shape[::-1], Image.NEAREST)) > 0
        union = np.logical_or(g, r).sum()
        if union and np.logical_and(g, r).sum() / union < min_iou:
            bad.append(stem)
    return bad


def drop_unrelated(generated_root: str | Path, real_root: str | Path,
                   generated: dict[str, tuple[str, Contrast]],
                   real: dict[str, tuple[str, Contrast]]) -> dict[str, tuple[str, Contrast]]:
    """``real`` without the pairs whose mask differs from the generated one of the same name.

    Refuses when no shared name has the same mask (``--real`` is not the dataset the masks came
    from); otherwise names the dropped pairs in a warning.
    """
    shared = [s for s in generated if s in real]
    bad = differing_masks(generated_root, real_root, shared)
    if shared and len(bad) == len(shared):
        raise UserError(f"{real_root}: none of the {len(shared)} real masks that share a name with a generated "
                        f"mask is the same mask (e.g. {bad[0]}); pass as --real the dataset whose masks "
                        "the generated images were made from")
    if bad:
        print(f"warning: {len(bad)} of {len(shared)} real masks differ from the generated masks of the same "
              f"name ({few(bad)}); those pairs are left out of the real comparison", file=sys.stderr)
    return {k: v for k, v in real.items() if k not in bad}


def _corr(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def summarize(generated: dict[str, tuple[str, Contrast]],
              real: Optional[dict[str, tuple[str, Contrast]]] = None) -> dict[str, dict[str, float]]:
    """Per category (and ``all``): mean CNR; with ``real``, sign agreement and delta correlation."""
    groups: dict[str, list[str]] = {"all": list(generated)}
    for stem, (cat, _) in generated.items():
        groups.setdefault(cat, []).append(stem)
    report = {}
    for name, stems in groups.items():
        row = {"pairs": len(stems), "cnr_generated": float(np.mean([generated[s][1].cnr for s in stems]))}
        both = [s for s in stems if real is not None and s in real]
        if both:
            g = [generated[s][1].delta for s in both]
            r = [real[s][1].delta for s in both]
            row.update({"matched": len(both), "cnr_real": float(np.mean([real[s][1].cnr for s in both])),
                        "sign_agreement": float(np.mean([math.copysign(1, x) == math.copysign(1, y)
                                                         for x, y in zip(g, r)])),
                        "delta_correlation": _corr(g, r)})
        report[name] = row
    return report


def format_report(report: dict[str, dict[str, float]]) -> str:
    cols = ("pairs", "cnr_generated", "cnr_real", "sign_agreement", "delta_correlation")
    lines = [f"{'category':12s} " + " ".join(f"{c:>17s}" for c in cols)]
    for name, row in report.items():
        cells = [f"{row[c]:17.3f}" if isinstance(row.get(c), float) else f"{row.get(c, '-'):>17}" for c in cols]
        lines.append(f"{name:12s} " + " ".join(cells))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evaluation.mask_adherence", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="example: python -m evaluation.mask_adherence --generated "
                                       "generation_samples/demo --real OUTPUT/demo/procedural")
    p.add_argument("--generated", required=True, help="paired folder written by infer.py")
    p.add_argument("--real", help="paired folder of real images with the same mask names (optional)")
    p.add_argument("--ring", type=int_in(1, 256), default=6,
                   help="ring width in pixels at 256 px (default: %(default)s)")
    p.add_argument("--out", help="write the report as JSON here")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    cats = categories_from_config(None)
    gen = folder_contrasts(args.generated, cats, args.ring)
    real = folder_contrasts(args.real, cats, args.ring) if args.real else None
    if real is not None:
        real = drop_unrelated(args.generated, args.real, gen, real)
    report = summarize(gen, real)
    print(format_report(report))
    if args.out:
        write_json_atomic(report, args.out)
    return 0


if __name__ == "__main__":
    run_cli(main)
