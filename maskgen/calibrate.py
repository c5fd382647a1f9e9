"""Per-category binarisation thresholds for a trained mask producer, chosen on a draw of its own.

    python -m maskgen.calibrate --ckpt OUTPUT/maskgen --data_root DATA/SD-saliency-900

The model's soft outputs are binarised at a threshold; the level that reproduces the training masks'
sizes differs per category (a patch's soft edge is long, a scratch's is most of the scratch). This
draws ``--n_per_category`` soft masks per category from a seed stream of its own (``--seed``, default
1000; ``maskgen.sample`` uses 0 unless told otherwise), decodes them at every threshold of a grid
exactly as ``maskgen.sample`` will, and keeps, per category, the threshold whose foreground areas
are closest to the training masks' (two-sample KS statistic; ties go to the level nearest 0.5).
The masks ``maskgen.sample`` writes afterwards are new draws, never the ones the levels were chosen on.
Writes ``calibration.json`` into the run folder; ``maskgen.sample`` uses it from there unless
``--threshold`` or ``--calibration none`` is given.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from dataset.categories import Category
from dataset.io import write_json_atomic
from runtime.cli import add_device, add_threads
from runtime.device import pick_device
from runtime.errors import UserError, run_cli

from .calibration import calibration_path, fitted_settings
from .checkpoint import load_checkpoint
from .config import checked
from .data import load_masks
from .model import MaskDiffusion, model_from_checkpoint
from .postprocess import binarize_prob, min_pixels, resize_soft
from .report import ks, stats_table
from .sample import SampleSettings, add_settings_arguments, draw_soft, sample_overrides, settings_from

GRID = tuple(round(0.05 + 0.025 * k, 3) for k in range(33))  # 0.050 ... 0.850


def areas_at(soft: np.ndarray, settings: SampleSettings, grid: Sequence[float]) -> np.ndarray:
    """Foreground area (fraction) of each soft output decoded at each threshold: len(soft) x len(grid);
    NaN where the decoded mask is empty (``maskgen.sample`` would draw it again)."""
    out = np.full((len(soft), len(grid)), np.nan)
    for i, s in enumerate(soft):
        prob = (resize_soft(s, settings.size, settings.upsample) + 1.0) * 0.5  # resized once, cut at each level
        min_px = min_pixels(settings.min_area, prob.shape)
        for j, level in enumerate(grid):
            mask = binarize_prob(prob, level, settings.low_threshold, min_px)
            if mask.any():
                out[i, j] = mask.mean()
    return out


def best_level(real_areas: np.ndarray, areas: np.ndarray, grid: Sequence[float]) -> tuple[float, float]:
    """(threshold, KS) with the smallest area KS against ``real_areas``; ties to the level nearest 0.5."""
    scores = [ks(real_areas, areas[:, j])["ks"] for j in range(len(grid))]
    scores = [np.inf if not np.isfinite(s) else s for s in scores]
    j = min(range(len(grid)), key=lambda k: (round(scores[k], 6), abs(grid[k] - 0.5)))
    return float(grid[j]), float(scores[j])


def calibrate(model: MaskDiffusion, categories: Sequence[Category], real: Mapping[str, Sequence[np.ndarray]],
              settings: SampleSettings, image_size: int, n_per_category: int = 100,
              grid: Sequence[float] = GRID, device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Per-category thresholds (by prefix) fitted to the real masks ``real[category name]``."""
    if n_per_category < 10:
        raise UserError(f"--n_per_category must be at least 10 for a calibration, got {n_per_category}")
    levels, rows = {}, {}
    for pos, cat in enumerate(tqdm(categories, desc="calibrate", disable=not progress)):
        masks = real.get(cat.name) or []
        if not masks:
            continue
        soft = draw_soft(model, pos, cat, list(range(1, n_per_category + 1)), 0, settings, image_size, device)
        areas = areas_at(soft, settings, grid)
        real_areas = stats_table(masks)["area"]
        level, score = best_level(real_areas, areas, grid)
        levels[cat.prefix] = level
        rows[cat.prefix] = {"threshold": level, "ks_area": score, "n_real": len(masks),
                            "empty_at_level": int(np.isnan(areas[:, list(grid).index(level)]).sum())}
    if not levels:
        raise UserError("no category has real masks to calibrate against; check --data_root")
    return {"thresholds": levels, "per_category": rows, "grid": list(grid), "n_per_category": n_per_category,
            "seed": settings.seed, "settings": fitted_settings(settings)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m maskgen.calibrate",
        description="Choose a binarisation threshold per category for a trained mask producer: the level at "
                    "which a draw of its own (seed stream --seed) matches the training masks' area "
                    "distribution best. Writes calibration.json into the run folder, which maskgen.sample "
                    "then uses.",
        epilog="example: python -m maskgen.calibrate --ckpt OUTPUT/maskgen --data_root DATA/SD-saliency-900")
    p.add_argument("--ckpt", required=True, help="checkpoint file or maskgen.train run folder")
    p.add_argument("--data_root", required=True,
                   help="the masks the producer was trained on: a folder of masks or a dataset root")
    p.add_argument("--n_per_category", type=int, default=100,
                   help="soft masks drawn per category for the fit (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1000,
                   help="seed of the calibration draw; keep it apart from maskgen.sample's (default: %(default)s)")
    p.add_argument("--out", default=None, help="output JSON (default: RUN/calibration.json)")
    add_settings_arguments(p)
    p.add_argument("--weights", choices=("ema", "raw"), default="ema", help="EMA or raw weights (default: ema)")
    add_device(p)
    add_threads(p, None, "torch's choice")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = sample_overrides(args)  # a mistyped --set fails before the model loads
    if args.threads:
        torch.set_num_threads(args.threads)
    device = str(pick_device(args.device))
    ckpt = load_checkpoint(args.ckpt)
    model, cats = model_from_checkpoint(ckpt, args.weights)
    stored = checked(ckpt["config"], f"{ckpt['path']} config")
    settings = settings_from(args, stored["sample"], overrides)
    settings.check(model.schedule.num_timesteps)
    real = load_masks(args.data_root, cats, binarize="error")
    result = calibrate(model.to(device), cats, real.masks, settings, int(ckpt["config"]["data"]["image_size"]),
                       args.n_per_category, device=device, progress=not args.no_progress)
    result["checkpoint"] = ckpt["path"]
    result["step"] = ckpt.get("step")
    result["real"] = str(args.data_root)
    out = Path(args.out) if args.out else calibration_path(args.ckpt)
    write_json_atomic(result, out)
    cells = ", ".join(f"{k} {v['threshold']:.3f} (KS area {v['ks_area']:.3f})"
                      for k, v in result["per_category"].items())
    print(f"maskgen.calibrate: {cells} -> {out}", file=sys.stdout)
    return 0


if __name__ == "__main__":
    run_cli(main)
