"""Mask-quality report: real vs generated masks, per category.

For every mask: foreground area (fraction of the image), number of 8-connected components and
elongation (area-weighted mean over components of sqrt(lambda_max / lambda_min) of the pixel
coordinates' second moments, each pixel counted as a unit square: a disk is 1, a 1×20 line ~20).
Per category and statistic: summary numbers and the two-sample Kolmogorov-Smirnov statistic
(scipy.stats.ks_2samp). Also a PNG grid of real and generated masks, histograms, and mask FID
(metrics.fid) when the Inception weights file is present.

    python -m maskgen.report --real DATA/SD-saliency-900 --generated OUTPUT/maskgen/masks --out OUTPUT/maskgen/report
"""
from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage, stats

from dataset.categories import Category, categories_from_config, load_categories_yaml
from dataset.io import write_json_atomic, write_png_atomic
from metrics.fid import fid_kid_lines
from runtime.atomic import savefig_atomic, write_text_atomic
from runtime.cli import add_categories, add_device
from runtime.errors import UserError, run_cli

from .data import MaskSet, load_masks, mask_dir
from .postprocess import EIGHT

STATS = ("area", "components", "elongation")


def mask_stats(mask: np.ndarray) -> dict[str, float]:
    """``area`` (fraction), ``components`` (8-connected) and ``elongation`` (NaN when empty)."""
    mask = np.asarray(mask, dtype=bool)
    area = float(mask.mean())
    labels, n = ndimage.label(mask, structure=EIGHT)
    if n == 0:
        return {"area": area, "components": 0.0, "elongation": float("nan")}
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs]
    cnt = np.bincount(lab, minlength=n + 1)[1:].astype(np.float64)

    def s(w: np.ndarray) -> np.ndarray:
        return np.bincount(lab, weights=w.astype(np.float64), minlength=n + 1)[1:]

    mx, my = s(xs) / cnt, s(ys) / cnt
    vxx = s(xs * xs.astype(np.float64)) / cnt - mx ** 2 + 1 / 12
    vyy = s(ys * ys.astype(np.float64)) / cnt - my ** 2 + 1 / 12
    vxy = s(xs * ys.astype(np.float64)) / cnt - mx * my
    half_tr, det_part = (vxx + vyy) / 2, np.sqrt(((vxx - vyy) / 2) ** 2 + vxy ** 2)
    lam_max, lam_min = half_tr + det_part, np.maximum(half_tr - det_part, 1e-12)
    elong = np.sqrt(lam_max / lam_min)
    return {"area": area, "components": float(n), "elongation": float(np.sum(elong * cnt) / cnt.sum())}


def stats_table(masks: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    rows = [mask_stats(m) for m in masks]
    return {k: np.array([r[k] for r in rows], dtype=np.float64) for k in STATS}


def _summary(values: np.ndarray) -> dict[str, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return {"n": 0}
    return {"n": int(v.size), "mean": float(v.mean()), "median": float(np.median(v)),
            "p10": float(np.percentile(v, 10)), "p90": float(np.percentile(v, 90)),
            "min": float(v.min()), "max": float(v.max())}


def ks(real: np.ndarray, gen: np.ndarray) -> dict[str, float]:
    """Two-sample KS statistic and p-value over the finite values of both samples."""
    r, g = real[np.isfinite(real)], gen[np.isfinite(gen)]
    if r.size == 0 or g.size == 0:
        return {"ks": float("nan"), "p": float("nan")}
    with warnings.catch_warnings():  # discrete values (component counts) defeat the exact method
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ks_2samp(r, g)
    return {"ks": float(res.statistic), "p": float(res.pvalue)}


def compare(real: MaskSet, gen: MaskSet) -> dict[str, Any]:
    """Per-category statistics and KS values for the categories present on both sides."""
    out: dict[str, Any] = {}
    for cat in real.categories:
        r, g = real.masks[cat.name], gen.masks[cat.name]
        if not r or not g:
            continue
        rt, gt = stats_table(r), stats_table(g)
        entry: dict[str, Any] = {"prefix": cat.prefix, "n_real": len(r), "n_generated": len(g),
                                 "empty_generated": int(sum(not m.any() for m in g)),
                                 "sizes_generated": sorted({f"{m.shape[1]}x{m.shape[0]}" for m in g})}
        for k in STATS:
            entry[k] = {"real": _summary(rt[k]), "generated": _summary(gt[k]), **ks(rt[k], gt[k])}
        out[cat.name] = {"summary": entry, "values": {"real": rt, "generated": gt}}
    return out


def _thumb(mask: np.ndarray, size: int) -> Image.Image:
    img = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255, "L")
    return img.resize((size, size), Image.BOX)


def make_grid(real: MaskSet, gen: MaskSet, categories: Sequence[Category], n: int = 8, thumb: int = 96,
              seed: int = 0) -> Image.Image:
    """Rows of ``n`` random real masks and ``n`` random generated masks for every category."""
    rng = np.random.default_rng(seed)
    label_w, gap = 150, 4
    rows = [(cat, side, src) for cat in categories for side, src in (("real", real), ("generated", gen))
            if real.masks[cat.name] and gen.masks[cat.name]]
    width = label_w + n * (thumb + gap) + gap
    height = len(rows) * (thumb + gap) + gap + (gap * 2) * len(categories)
    canvas = Image.new("L", (width, height), 96)
    draw = ImageDraw.Draw(canvas)
    try:
        font = ImageFont.load_default(size=16)
    except TypeError:  # Pillow < 10.1 has a single bitmap size
        font = ImageFont.load_default()
    y = gap
    last_cat = None
    for cat, side, src in rows:
        if last_cat is not None and cat != last_cat:
            y += gap * 2
        last_cat = cat
        masks = src.masks[cat.name]
        pick = rng.choice(len(masks), size=min(n, len(masks)), replace=False)
        draw.text((6, y + thumb // 2 - 18), f"{cat.name}\n{side}", fill=255, font=font)
        for j, i in enumerate(pick):
            canvas.paste(_thumb(masks[i], thumb), (label_w + gap + j * (thumb + gap), y))
        y += thumb + gap
    return canvas


def plot_distributions(results: Mapping[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(len(names), len(STATS), figsize=(4 * len(STATS), 2.8 * len(names)), squeeze=False)
    for i, name in enumerate(names):
        vals, summ = results[name]["values"], results[name]["summary"]
        for j, k in enumerate(STATS):
            ax = axes[i][j]
            r, g = vals["real"][k], vals["generated"][k]
            r, g = r[np.isfinite(r)], g[np.isfinite(g)]
            top = float(np.concatenate([r, g]).max(initial=0.0))
            if k == "components":
                bins = np.arange(0.5, max(top, 1) + 1.5)
            elif k == "elongation":
                bins = np.geomspace(1, max(top, 1.5) * 1.05, 25)
                ax.set_xscale("log")
            else:
                bins = np.linspace(0, top * 1.05 if top > 0 else 1, 25)
            for values, side in ((r, "real"), (g, "generated")):
                # empty masks (0 components) fall outside the bins: plot only a side with values in range
                if ((values >= bins[0]) & (values <= bins[-1])).any():
                    ax.hist(values, bins=bins, alpha=0.55, density=True, label=f"{side} ({len(values)})")
            ax.set_title(f"{name}: {k}  KS={summ[k]['ks']:.3f}", fontsize=10)
            if i == 0 and j == 0:
                ax.legend(fontsize=8)
    fig.tight_layout()
    savefig_atomic(fig, path, dpi=90)
    plt.close(fig)
    return path


def mask_fid(real_root: str | Path, generated: str | Path, categories: Sequence[Category],
             inception: Optional[str], device: str = "cpu") -> dict[str, Any]:
    """Per-category and overall FID of the masks (as grey images), or why it was skipped."""
    try:
        from metrics import fid as fidmod
    except ImportError as exc:  # pragma: no cover - metrics.fid is part of the project
        return {"skipped": f"metrics.fid unavailable ({exc})"}
    try:
        fidmod.find_inception_weights(inception)
    except UserError as exc:
        return {"skipped": str(exc)}
    try:
        extractor = fidmod.InceptionFeatures(inception, device)
    except ImportError as exc:
        return {"skipped": f"torch-fidelity is not installed ({exc})"}
    rows = fidmod.compare_folders(mask_dir(real_root), mask_dir(generated), extractor, list(categories),
                                  cache_dir=fidmod.DEFAULT_CACHE, progress=False, log=lambda m: None)
    return {"rows": rows}


def _fmt(v: Any, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def markdown(summary: Mapping[str, Any], fid: Mapping[str, Any], real: str, gen: str) -> str:
    lines = ["# Mask quality: generated vs real", "", f"- real: `{real}`", f"- generated: `{gen}`", "",
             "| category | n real | n gen | empty gen | KS area | KS components | KS elongation | "
             "area mean real / gen | components mean real / gen | elongation median real / gen |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        a, c, e = s["area"], s["components"], s["elongation"]
        lines.append(
            f"| {name} | {s['n_real']} | {s['n_generated']} | {s['empty_generated']} | {_fmt(a['ks'])} | "
            f"{_fmt(c['ks'])} | {_fmt(e['ks'])} | {_fmt(a['real'].get('mean'))} / {_fmt(a['generated'].get('mean'))} | "
            f"{_fmt(c['real'].get('mean'))} / {_fmt(c['generated'].get('mean'))} | "
            f"{_fmt(e['real'].get('median'))} / {_fmt(e['generated'].get('median'))} |")
    lines.append("")
    if "rows" in fid:
        lines += ["## Mask FID (Inception-v3 features of the masks as grey images)", "", *fid_kid_lines(fid["rows"])]
    else:
        lines.append(f"Mask FID skipped: {fid.get('skipped')}")
    lines += ["", "KS: two-sample Kolmogorov-Smirnov statistic (0 = same distribution, 1 = disjoint). "
              "Elongation: area-weighted mean over components of sqrt(λmax/λmin) of the second moments.",
              "", "![grid](grid.png)", "", "![distributions](distributions.png)", ""]
    return "\n".join(lines)


def run_report(real: str | Path | Sequence[Path], generated: str | Path, out: str | Path,
               categories: Optional[Sequence[Category]] = None, n_grid: int = 8, seed: int = 0,
               fid: str = "auto", inception: Optional[str] = None, device: str = "cpu",
               log=print) -> dict[str, Any]:
    cats = list(categories) if categories is not None else categories_from_config(None)
    real_set = load_masks(real, cats, binarize="error")
    gen_set = load_masks(generated, cats, binarize="error")
    results = compare(real_set, gen_set)
    if not results:
        raise UserError(f"{generated}: no category has both real and generated masks; generated names "
                        f"must start with a known prefix ({', '.join(c.prefix for c in cats)})")
    for cat in cats:
        if cat.name not in results and (real_set.masks[cat.name] or gen_set.masks[cat.name]):
            log(f"note: {cat.name} has {len(real_set.masks[cat.name])} real and "
                f"{len(gen_set.masks[cat.name])} generated masks; not compared")
    summary = {k: v["summary"] for k, v in results.items()}
    listed = isinstance(real, (list, tuple))
    real_name = f"{len(real)} listed masks" if listed else str(real)
    if fid != "auto":
        fid_res = {"skipped": "disabled with --no_fid"}
    elif listed:
        fid_res = {"skipped": "mask FID needs a folder of real masks, not a list"}
    else:
        fid_res = mask_fid(real, generated, [c for c in cats if c.name in results], inception, device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"real": real_name, "generated": str(generated), "categories": summary, "mask_fid": fid_res}
    write_json_atomic(report, out / "report.json")
    write_text_atomic(markdown(summary, fid_res, real_name, str(generated)), out / "report.md")
    write_png_atomic(make_grid(real_set, gen_set, [c for c in cats if c.name in results], n_grid, seed=seed),
                     out / "grid.png")
    plot_distributions(results, out / "distributions.png")
    return report


def format_summary(report: Mapping[str, Any]) -> str:
    lines = [f"{'category':<12}{'n_gen':>6}{'empty':>6}{'KS area':>9}{'KS comp':>9}{'KS elong':>9}"
             f"{'area real/gen':>16}{'elong med real/gen':>20}"]
    for name, s in report["categories"].items():
        a, e = s["area"], s["elongation"]  # a side with only empty masks has no mean or median
        lines.append(f"{name:<12}{s['n_generated']:>6}{s['empty_generated']:>6}{_fmt(a['ks']):>9}"
                     f"{_fmt(s['components']['ks']):>9}{_fmt(e['ks']):>9}"
                     f"{_fmt(a['real'].get('mean')):>8}/{_fmt(a['generated'].get('mean')):<7}"
                     f"{_fmt(e['real'].get('median'), 2):>11}/{_fmt(e['generated'].get('median'), 2):<8}")
    fid = report["mask_fid"]
    if "rows" in fid:
        lines.append("mask FID: " + ", ".join(f"{r['category']} {r['FID']:.2f}" for r in fid["rows"]))
    else:
        lines.append(f"mask FID skipped: {fid['skipped']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m maskgen.report",
        description="Compare generated masks with real ones per category: area, connected components "
                    "and elongation distributions with two-sample KS statistics, a PNG grid, histograms "
                    "and mask FID (when the Inception weights are present). Writes report.json, "
                    "report.md, grid.png and distributions.png to --out.",
        epilog="example: python -m maskgen.report --real DATA/SD-saliency-900 "
               "--generated OUTPUT/maskgen/masks --out OUTPUT/maskgen/report")
    p.add_argument("--real", required=True, help="real masks: folder of PNGs or dataset root with 'Ground truth'")
    p.add_argument("--generated", required=True, help="generated masks (<prefix>_gen_*.png)")
    p.add_argument("--out", required=True, help="report folder")
    add_categories(p, aliases=("--config",))  # --config: this command's earlier spelling
    p.add_argument("--n_grid", type=int, default=8, help="masks per row in grid.png (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed for picking grid masks")
    p.add_argument("--no_fid", action="store_true", help="skip mask FID even when Inception weights exist")
    p.add_argument("--inception", help="path to the Inception weights for mask FID (see evaluation.fid)")
    add_device(p)
    p.add_argument("--max_ks_area", type=float,
                   help="exit with status 1 when any category's KS statistic on area exceeds this")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    cats = load_categories_yaml(args.categories) if args.categories else None
    report = run_report(args.real, args.generated, args.out, cats, args.n_grid, args.seed,
                        "skip" if args.no_fid else "auto", args.inception, args.device,
                        log=lambda m: print(m, file=sys.stderr))
    print(format_summary(report))
    print(f"wrote {Path(args.out) / 'report.md'}, report.json, grid.png, distributions.png")
    if args.max_ks_area is not None:
        worst = max(s["area"]["ks"] for s in report["categories"].values())
        if worst > args.max_ks_area:
            print(f"area KS {worst:.3f} exceeds --max_ks_area {args.max_ks_area}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
