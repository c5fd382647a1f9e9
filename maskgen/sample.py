"""Draw new defect masks per category from a trained mask DDPM.

    python -m maskgen.sample --ckpt OUTPUT/maskgen --n_per_category 300 --size 256 --out OUTPUT/maskgen/masks

Writes ``<prefix>_gen_0001.png`` … (8-bit, exactly 0/255) so ``infer.py`` and the dataset loader
read the category from the filename prefix, plus ``maskgen_manifest.json`` with the settings.
Each mask's starting noise is seeded from (seed, category, mask number), so the same seed gives the
same masks whatever the batch size, and a run with fewer masks is a prefix of a larger one.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from dataset.categories import Category
from dataset.io import write_json_atomic, write_png_atomic
from ldm.diffusion.samplers import SAMPLERS
from runtime import options as O
from runtime.atomic import write_bytes_atomic
from runtime.cli import add_device, add_threads
from runtime.device import pick_device
from runtime.errors import UserError, run_cli
from runtime.lock import locked
from runtime.seeds import generator

from .checkpoint import load_checkpoint
from .config import SCHEMA, checked
from .model import MaskDiffusion, model_from_checkpoint
from .postprocess import UPSAMPLING, nonempty_fallback, postprocess
from .settings import SampleSettings

MANIFEST = "maskgen_manifest.json"
UNFINISHED = ".maskgen_unfinished"  # present while write_masks runs: a stopped run's masks are replaced


@dataclass
class CategoryResult:
    category: Category
    masks: list[np.ndarray]
    redraws: int = 0                       # masks re-drawn because they came out empty
    fallbacks: list[int] = field(default_factory=list)  # mask numbers that needed the last resort


def select_categories(categories: Sequence[Category], wanted: Optional[Sequence[str]]) -> list[Category]:
    """Categories named (by name or prefix, case-insensitive) in ``wanted``; all when empty."""
    if not wanted:
        return list(categories)
    out = []
    for item in wanted:
        key = item.strip().lower()
        match = [c for c in categories if key in (c.name.lower(), c.prefix.lower())]
        if not match:
            known = ", ".join(f"{c.name} ({c.prefix})" for c in categories)
            raise UserError(f"unknown category {item!r}; this checkpoint knows: {known}")
        if match[0] not in out:
            out.append(match[0])
    return out


def _noise(seed: int, cat: Category, number: int, attempt: int, size: int) -> torch.Tensor:
    return torch.randn((1, size, size), generator=generator(seed, cat.index, number, attempt))


@torch.no_grad()
def draw_soft(model: MaskDiffusion, class_id: int, cat: Category, numbers: Sequence[int], attempt: int,
          s: SampleSettings, image_size: int, device: str) -> np.ndarray:
    """Run the sampler for the given mask numbers; returns their raw outputs (N×H×W, ~[-1, 1])."""
    outs = []
    sampler = SAMPLERS[s.sampler]
    ac = model.schedule.alphas_cumprod
    for start in range(0, len(numbers), s.batch_size):
        chunk = numbers[start:start + s.batch_size]
        x = torch.stack([_noise(s.seed, cat, i, attempt, image_size) for i in chunk]).to(device)
        y = torch.full((len(chunk),), class_id, dtype=torch.long, device=device)
        fn = model.eps_fn(y, guidance=s.guidance, clip_x0=s.clip_x0)
        if s.sampler == "ddim":
            gen = None
            if s.eta:
                gen = generator(s.seed, cat.index, chunk[0], attempt, 7, device=device)
            x = sampler(fn, x, ac, s.steps, eta=s.eta, generator=gen)
        else:
            x = sampler(fn, x, ac, s.steps)
        outs.append(x[:, 0].float().cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, image_size, image_size), np.float32)


def sample_masks(model: MaskDiffusion, categories: Sequence[Category], selected: Sequence[Category],
                 n_per_category: int, settings: SampleSettings, image_size: int, device: str = "cpu",
                 progress: bool = True) -> list[CategoryResult]:
    """``n_per_category`` non-empty binary masks at ``settings.size`` for each selected category."""
    settings.check(model.schedule.num_timesteps)
    if n_per_category < 1:
        raise UserError(f"--n_per_category must be at least 1, got {n_per_category}")
    model = model.to(device).eval()
    results = []
    for cat in selected:
        class_id = list(categories).index(cat)
        masks: list[Optional[np.ndarray]] = [None] * n_per_category
        last_soft: dict[int, np.ndarray] = {}
        todo = list(range(n_per_category))
        redraws = 0
        bar = tqdm(total=n_per_category, desc=f"{cat.name}", disable=not progress, dynamic_ncols=True,
                   mininterval=1.0 if sys.stderr.isatty() else 30.0)
        for attempt in range(settings.max_retries + 1):
            if not todo:
                break
            if attempt:
                redraws += len(todo)
            soft = draw_soft(model, class_id, cat, [i + 1 for i in todo], attempt, settings, image_size, device)
            still = []
            for i, out in zip(todo, soft):
                m = postprocess(out, settings.size, settings.level(cat), settings.min_area, settings.low_threshold,
                                settings.upsample)
                if m.any():
                    masks[i] = m
                    bar.update(1)
                else:
                    last_soft[i] = out
                    still.append(i)
            todo = still
        fallbacks = []
        for i in todo:
            masks[i] = nonempty_fallback(last_soft[i], settings.size, settings.level(cat))
            fallbacks.append(i + 1)
            bar.update(1)
        bar.close()
        if fallbacks:
            print(f"warning: {len(fallbacks)} {cat.name} mask(s) stayed empty after {settings.max_retries} "
                  f"re-draws; kept their largest blob instead (numbers {fallbacks[:10]})", file=sys.stderr)
        results.append(CategoryResult(cat, [m for m in masks if m is not None], redraws, fallbacks))
    return results


def mask_name(cat: Category, number: int, total: int) -> str:
    width = max(4, len(str(total)))
    return f"{cat.prefix}_gen_{number:0{width}d}.png"


def write_masks(results: Sequence[CategoryResult], out: str | Path, overwrite: bool = False,
                manifest: Optional[dict[str, Any]] = None) -> list[Path]:
    """Write the masks (and ``manifest`` last, when given) into ``out``.

    Masks already there are refused without ``overwrite``, except those of a run of this function that
    stopped before it finished (a full disk, a kill): its marker file is still there, so the same command
    replaces them.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    marker = out / UNFINISHED
    old = [p for r in results for p in out.glob(f"{r.category.prefix}_gen_*.png")]
    if old and not overwrite and not marker.is_file():
        raise UserError(f"{out}: already holds {len(old)} generated mask(s) (e.g. {old[0].name}); "
                        "pass --overwrite to replace them or choose another --out")
    write_bytes_atomic(b"", marker)
    (out / MANIFEST).unlink(missing_ok=True)  # it would describe masks this run replaces
    for p in old:
        p.unlink()
    written = []
    for r in results:
        for k, m in enumerate(r.masks, start=1):
            path = out / mask_name(r.category, k, len(r.masks))
            write_png_atomic(Image.fromarray(m.astype(np.uint8) * 255, "L"), path)
            written.append(path)
    if manifest is not None:
        write_json_atomic(manifest, out / MANIFEST)
    marker.unlink()
    return written


def add_settings_arguments(p: argparse.ArgumentParser) -> None:
    """The sampling and decoding flags ``maskgen.sample`` and ``maskgen.calibrate`` share."""
    p.add_argument("--size", type=int, help="output size in pixels, square (paper: 256)")
    p.add_argument("--config", default=None,
                   help="YAML whose sample: section overrides the checkpoint's (same schema as "
                        "maskgen.train's --config; default: none)")
    O.add_set_argument(p, "sample.steps=25 sample.threshold=0.6", "; the flags below win over them")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), help="ldm.diffusion.samplers sampler")
    p.add_argument("--steps", type=int, help="sampler steps")
    p.add_argument("--eta", type=float, help="DDIM eta (0 = deterministic)")
    p.add_argument("--guidance_scale", "--guidance", dest="guidance", type=float,
                   help="classifier-free guidance scale on the class (1 = off)")
    p.add_argument("--no_clip_x0", action="store_true", help="do not clip the predicted clean mask to [-1, 1]")
    p.add_argument("--threshold", type=float,
                   help="binarisation threshold on the [0, 1] scale, for every category (default: the run's "
                        "calibration.json when there is one, else the config's)")
    p.add_argument("--low_threshold", type=float,
                   help="hysteresis: also keep pixels above this level that touch a pixel above the threshold")
    p.add_argument("--upsample", choices=UPSAMPLING, help="how the model's output is resized before binarising")
    p.add_argument("--min_area", type=float,
                   help="drop connected components smaller than this fraction of the image")
    p.add_argument("--batch_size", type=int, help="masks per sampler batch")
    p.add_argument("--max_retries", type=int, help="re-draws of a mask that comes out empty")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m maskgen.sample",
        description="Sample new binary defect masks per category from a maskgen checkpoint and write "
                    "them as <prefix>_gen_0001.png ... (0/255 PNG). Unset options take the values "
                    "stored in the checkpoint's config (its 'sample' section).",
        epilog="example: python -m maskgen.sample --ckpt OUTPUT/maskgen --n_per_category 300 "
               "--size 256 --out OUTPUT/maskgen/masks --seed 0")
    p.add_argument("--ckpt", required=True, help="checkpoint file or maskgen.train run folder")
    p.add_argument("--out", required=True, help="output folder for the mask PNGs")
    p.add_argument("--n_per_category", type=int, default=300, help="masks per category (default: %(default)s)")
    p.add_argument("--categories", help="comma-separated names or prefixes to sample (default: all)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--calibration", default="auto",
                   help="per-category thresholds from maskgen.calibrate: a calibration.json, 'auto' (the run "
                        "folder's, when present) or 'none' (default: auto)")
    add_settings_arguments(p)
    p.add_argument("--weights", choices=("ema", "raw"), default="ema", help="EMA or raw weights (default: ema)")
    p.add_argument("--overwrite", action="store_true", help="replace generated masks already in --out")
    add_device(p)
    add_threads(p, None, "torch's choice")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    return p


def sample_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``sample`` keys given by ``--config`` (its ``sample:`` section) and ``--set`` (strict keys),
    read before anything else so that a typo fails fast."""
    given: dict[str, Any] = {}
    if getattr(args, "config", None) is not None:
        where = f"config {args.config}"
        loaded = O.check(O.resolve(O.read_yaml(args.config), where), SCHEMA, where)
        given.update(loaded.get("sample") or {})
    schema = {"sample": SCHEMA["sample"]}
    for key, value in O.parse_set(getattr(args, "set", None) or []):
        given = O.set_value({"sample": given}, key, value, schema, f"--set {key}")["sample"]
    return given


def settings_from(args: argparse.Namespace, stored: dict[str, Any],
                  overrides: Optional[dict[str, Any]] = None) -> SampleSettings:
    """Defaults < the checkpoint's ``sample`` section < ``--config`` < ``--set`` < flags."""
    sample = {**stored, **(overrides if overrides is not None else sample_overrides(args))}
    s = SampleSettings(**{k: v for k, v in sample.items() if k in SampleSettings.__dataclass_fields__})
    for key in ("sampler", "steps", "eta", "guidance", "threshold", "low_threshold", "upsample", "min_area", "size",
                "batch_size", "max_retries", "seed"):
        val = getattr(args, key, None)
        if val is not None:
            setattr(s, key, val)
    if args.no_clip_x0:
        s.clip_x0 = False
    return s


def calibration_file(args: argparse.Namespace, overrides: dict[str, Any]) -> Optional[Path]:
    """The calibration to use: none when a threshold is given (flag, ``--set`` or ``--config``) or
    ``--calibration none``."""
    choice = str(getattr(args, "calibration", "auto") or "auto")
    if choice == "none" or args.threshold is not None or "threshold" in overrides:
        return None
    if choice == "auto":
        from .calibration import calibration_path

        path = calibration_path(args.ckpt)
        return path if path.is_file() else None
    if not Path(choice).is_file():
        raise UserError(f"--calibration {choice}: file not found; run python -m maskgen.calibrate or pass "
                        "--calibration none")
    return Path(choice)


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = sample_overrides(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = str(pick_device(args.device))
    ckpt = load_checkpoint(args.ckpt)
    model, cats = model_from_checkpoint(ckpt, args.weights)
    selected = select_categories(cats, args.categories.split(",") if args.categories else None)
    stored = checked(ckpt["config"], f"{ckpt['path']} config")
    settings = settings_from(args, stored["sample"], overrides)
    calibration = calibration_file(args, overrides)
    if calibration is not None:
        from .calibration import read_calibration

        settings.thresholds = read_calibration(calibration, settings, ckpt)
        print(f"maskgen.sample: thresholds from {calibration}: "
              + ", ".join(f"{k} {v:.3f}" for k, v in settings.thresholds.items()))
    settings.check(model.schedule.num_timesteps)
    if args.n_per_category < 1:
        raise UserError(f"--n_per_category must be at least 1, got {args.n_per_category}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; choose another --out")
    with locked(out, "choose another --out"):  # one writer per mask folder
        results = sample_masks(model, cats, selected, args.n_per_category, settings,
                               int(ckpt["config"]["data"]["image_size"]), device, progress=not args.no_progress)
        manifest = {
            "checkpoint": ckpt["path"], "weights": args.weights, "epoch": ckpt.get("epoch"),
            "step": ckpt.get("step"), "settings": vars(settings),
            "calibration": str(calibration) if calibration is not None else None,
            "categories": {r.category.name: {"prefix": r.category.prefix, "count": len(r.masks),
                                             "redraws": r.redraws, "fallbacks": r.fallbacks,
                                             "mean_area": float(np.mean([m.mean() for m in r.masks]))}
                           for r in results},
        }
        written = write_masks(results, out, overwrite=args.overwrite, manifest=manifest)
    summary = ", ".join(f"{r.category.prefix} {len(r.masks)} (redrawn {r.redraws}, fallback {len(r.fallbacks)})"
                        for r in results)
    print(f"maskgen.sample: wrote {len(written)} masks to {out}: {summary}")
    return 0


if __name__ == "__main__":
    run_cli(main)
