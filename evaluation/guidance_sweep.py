"""Guidance sweep (the paper's Table 2): FID/KID of one category generated at several guidance scales.

For every scale ``w`` the category's masks are generated in-process with the library behind
``infer.py`` (:func:`inference.generate.generate_dataset`, into ``OUT/w<w>/``, the checkpoint loaded
once; re-running resumes) and the generated images are compared with the real images of the category.
The table goes to stdout and ``OUT/sweep.md``/``.csv``; ``OUT/sweep.png`` plots FID and KID against ``w``.

    python -m evaluation.guidance_sweep --config configs/eval/guidance_sweep.yaml \
        --set ckpt=OUTPUT/exp/checkpoints/latest.safetensors category=scratches
"""
from __future__ import annotations

import argparse
import difflib
import math
import shutil
from pathlib import Path
from typing import Callable, Sequence

from omegaconf import DictConfig, OmegaConf

from dataset.categories import categories_from_config
from dataset.files import MASK_EXTS, list_by_stem
from dataset.folders import category_of, mask_folder
from inference.generate import GenerationOptions, generate_dataset, load_pipeline
from inference.jobs import JobSpec
from metrics.fid import FeatureExtractor, InceptionFeatures, fid_from_features, folder_features, kid_from_features
from runtime.atomic import savefig_atomic
from runtime.configs import EVAL_CONFIG_DIR, REPO, load_config
from runtime.errors import UserError, run_cli
from runtime.options import add_set_argument

from .report import write_tables

DEFAULT_CONFIG = EVAL_CONFIG_DIR / "guidance_sweep.yaml"
#: generate(scale, out_dir, mask_dir) must leave generated pairs (Source_Images/...) in out_dir
Generator = Callable[[float, Path, Path], None]


def scale_dir(out: Path, scale: float) -> Path:
    return out / f"w{float(scale):g}"


#: ``infer:`` keys of the sweep config, by what they set (infer.py flag names)
LOAD_KEYS = ("device", "precision", "weights", "config")
JOB_KEYS = ("seed", "num_per_mask", "prompt", "skip_empty_masks")
OPTION_KEYS = ("sampler", "steps", "negative_prompt", "alpha_type", "strength", "dilate", "output_size",
               "grayscale", "batch_size")
SOURCE_KEYS = ("background", "init_image")
INFER_KEYS = LOAD_KEYS + JOB_KEYS + OPTION_KEYS + SOURCE_KEYS


def _infer_settings(cfg: DictConfig) -> dict:
    raw = cfg.get("infer") or {}
    settings = OmegaConf.to_container(raw, resolve=True) if isinstance(raw, DictConfig) else dict(raw)
    for key in settings:
        if key not in INFER_KEYS:
            near = difflib.get_close_matches(str(key), INFER_KEYS, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise UserError(f"guidance sweep: infer.{key} is not an infer.py setting{hint}; "
                            f"use one of {', '.join(INFER_KEYS)}")
    if settings.get("background") is not None and settings.get("init_image") is not None:
        raise UserError("guidance sweep: set infer.background (implant) or infer.init_image (SDEdit), not both")
    return {k: v for k, v in settings.items() if v is not None}


def infer_generator(cfg: DictConfig, log: Callable[[str], None] = print) -> Generator:
    """Generate one guidance scale in-process with :mod:`inference.generate` (the checkpoint is loaded
    once, on the first call)."""
    if not cfg.get("ckpt"):
        raise UserError("guidance sweep: no checkpoint; pass --set ckpt=PATH (a DefFiller checkpoint)")
    if not Path(cfg.ckpt).is_file():
        raise UserError(f"{cfg.ckpt}: checkpoint not found; check --set ckpt=PATH")
    settings = _infer_settings(cfg)
    source = settings.get("background", settings.get("init_image"))
    mode = "implant" if "background" in settings else "sdedit" if "init_image" in settings else "generate"
    options = {k: settings[k] for k in OPTION_KEYS if k in settings}
    if "alpha_type" in options:
        options["alpha_type"] = tuple(options["alpha_type"])
    GenerationOptions(mode=mode, **options)  # refuse bad settings before loading anything
    pipe: list = []

    def generate(scale: float, out_dir: Path, mask_dir: Path) -> None:
        opts = GenerationOptions(guidance_scale=float(scale), mode=mode, **options)
        if not pipe:
            pipe.append(load_pipeline(cfg.ckpt, device=settings.get("device"),
                                      precision=settings.get("precision", "fp32"),
                                      weights=settings.get("weights", "auto"), config=settings.get("config")))
        spec = JobSpec(Path(mask_dir), int(settings.get("num_per_mask", 1)), int(settings.get("seed", 0)),
                       settings.get("prompt"), bool(settings.get("skip_empty_masks", False)))
        log(f"generating guidance {scale:g} into {out_dir}")
        generate_dataset(pipe[0], spec, out_dir, opts, background=source)
    return generate


def category_masks(real: str | Path, category: str, categories, out: Path,
                   log: Callable[[str], None] = print) -> Path:
    """Copy the real masks of ``category`` into ``out`` (an infer.py --mask_dir)."""
    masks = list_by_stem(mask_folder(real), MASK_EXTS, "mask", strict=False)
    chosen = [p for s, p in masks.items() if category_of(s, categories) == category]
    if not chosen:
        raise UserError(f"{mask_folder(real)}: no masks of category {category!r}")
    out.mkdir(parents=True, exist_ok=True)
    for p in chosen:
        if not (out / p.name).is_file():
            shutil.copy2(p, out / p.name)
    log(f"masks: {len(chosen)} {category} masks in {out}")
    return out


def run_sweep(cfg: DictConfig, extractor: FeatureExtractor | None = None, generate: Generator | None = None,
              progress: bool = True, log: Callable[[str], None] = print) -> list[dict]:
    """Generate at each scale, then FID/KID against the real category; returns the table rows."""
    cats = categories_from_config(cfg.get("categories"))
    names = [c.name for c in cats]
    if cfg.get("category") not in names:
        raise UserError(f"guidance sweep: category {cfg.get('category')!r} unknown; use one of {', '.join(names)}")
    try:
        scales = [float(s) for s in (cfg.get("scales") or [])]
    except (TypeError, ValueError):
        raise UserError(f"guidance sweep: scales {cfg.get('scales')!r} must be numbers, e.g. [1, 2, 3]") from None
    if not scales:
        raise UserError("guidance sweep: 'scales' is empty; list guidance scales, e.g. [1, 2, 3, 4, 5]")
    bad = [s for s in scales if not math.isfinite(s)]
    if bad:
        raise UserError(f"guidance sweep: scales must be finite numbers, got {bad[0]}; e.g. [1, 2, 3, 4, 5]")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    generate = generate or infer_generator(cfg, log)
    fid_cfg = cfg.get("fid") or {}
    cache = fid_cfg.get("cache_dir", str(REPO / "DATA" / "fid_cache"))
    extractor = extractor or InceptionFeatures(fid_cfg.get("inception"), fid_cfg.get("device", "cpu") or "cpu")
    mask_dir = Path(cfg.mask_dir) if cfg.get("mask_dir") else category_masks(cfg.real, cfg.category, cats,
                                                                             out / "masks", log)
    stems, feats = folder_features(cfg.real, extractor, cache, progress=progress, log=log)
    idx = [i for i, s in enumerate(stems) if category_of(s, cats) == cfg.category]
    if len(idx) < 2:
        raise UserError(f"{cfg.real}: fewer than 2 real {cfg.category} images; cannot compute FID")
    real = feats[idx]
    rows = []
    for scale in scales:
        target = scale_dir(out, scale)
        generate(scale, target, mask_dir)
        _, fake = folder_features(target, extractor, cache, progress=progress, log=log)
        kid, kid_std, size = kid_from_features(real, fake, int(fid_cfg.get("kid_subsets", 100)),
                                               fid_cfg.get("kid_subset_size", 1000))
        row = {"guidance": scale, "n_real": len(real), "n_fake": len(fake),
               "FID": fid_from_features(real, fake), "KID": kid, "KID_std": kid_std, "KID_subset": size}
        rows.append(row)
        log(f"guidance {scale:g}: FID {row['FID']:.2f}  KID {kid * 1e3:.2f}e-3 ± {kid_std * 1e3:.2f}e-3")
    columns = ["guidance", "n_real", "n_fake", "FID", "KID", "KID_std", "KID_subset"]
    write_tables(rows, columns, out / "sweep", title=f"Guidance sweep: {cfg.category} (paper Table 2)",
                 note="FID/KID on Inception-v3 pool features (torch-fidelity); lower is better.", bold_best=())
    plot_sweep(rows, out / "sweep.png", str(cfg.category))
    print(format_sweep(rows, str(cfg.category)))
    return rows


def format_sweep(rows: Sequence[dict], category: str) -> str:
    lines = [f"guidance sweep ({category})", f"{'w':>6}{'n':>6}{'FID':>10}{'KID x1e3':>18}"]
    for r in rows:
        lines.append(f"{r['guidance']:>6g}{r['n_fake']:>6}{r['FID']:>10.2f}"
                     f"{r['KID'] * 1e3:>10.2f} ± {r['KID_std'] * 1e3:.2f}")
    return "\n".join(lines)


def plot_sweep(rows: Sequence[dict], path: Path, category: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = [r["guidance"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(w, [r["FID"] for r in rows], "o-", label="FID")
    ax.set_xlabel("guidance scale ω")
    ax.set_ylabel("FID")
    ax2 = ax.twinx()
    ax2.errorbar(w, [r["KID"] * 1e3 for r in rows], yerr=[r["KID_std"] * 1e3 for r in rows],
                 fmt="s--", color="tab:orange", label="KID ×1e3")
    ax2.set_ylabel("KID ×1e3")
    ax.set_title(f"Guidance sweep: {category}")
    fig.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    out = savefig_atomic(fig, path, dpi=120)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.guidance_sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="sweep YAML (default %(default)s)")
    add_set_argument(parser, "ckpt=PATH category=patches 'scales=[2,3,4]'")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, DEFAULT_CONFIG, args.set)
    run_sweep(cfg, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    run_cli(main)
