"""Fidelity of a study's generated pairs, measured against real ones (written to ``fidelity/fidelity.json``).

* **detector IoU**: each seed's detector trained on the real training split (the ``real`` setting of the
  detectors stage) predicts on the generated images and on the real test images; IoU of the map
  binarised at 0.5 with the image's mask (:func:`evaluation.sample_filter.score_pairs`), averaged per
  category and overall, then mean and std over seeds.
* **mask adherence** (:mod:`evaluation.mask_adherence`): contrast of the masked region against a ring
  around it, generated vs real (matched by name where the generated pairs come from real masks).
* **FID / KID** per category (:mod:`evaluation.fid`) against the real images of the data root, when the
  Inception weights are present; otherwise the reason it was skipped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dataset.io import write_json_atomic
from dataset.pairs import find_pairs
from runtime.atomic import write_text_atomic
from runtime.errors import UserError

from ..report import csv_text

OVERALL = "overall"


def _by_category(rows: list[dict]) -> dict[str, float]:
    out: dict[str, list[float]] = {}
    for row in rows:
        out.setdefault(row["category"], []).append(row["iou"])
    means = {k: float(np.mean(v)) for k, v in out.items()}
    means[OVERALL] = float(np.mean([r["iou"] for r in rows])) if rows else float("nan")
    return means


def mean_std(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else float("nan"),
            "n": int(len(arr))}


def detector_iou(ctx, study: str, generated: Path, folder: Path) -> dict[str, Any]:
    """Per category: IoU on generated and on real test pairs, mean/std over the seeds' real-trained detectors."""
    from ..detector.predict import Detector
    from ..sample_filter import score_pairs

    _, test_pairs = ctx.pairs(study)
    gen_pairs = find_pairs(generated, ctx.categories, check_sizes=False)
    det_root = ctx.study_dir(study) / "detectors"
    per_seed: dict[str, dict[str, dict[str, float]]] = {}
    pair_rows = []
    for seed in ctx.study_config(study)["detectors"]["seeds"]:
        det = Detector(det_root / f"seed{seed}" / "real", ctx.cfg["device"])  # its run folder's final weights
        scores = {}
        for side, pairs in (("generated", gen_pairs), ("real_test", test_pairs)):
            rows = score_pairs(pairs, lambda paths: det(paths, progress=ctx.progress), log=ctx.log)
            scores[side] = _by_category(rows)
            pair_rows += [{"seed": seed, "side": side, **r} for r in rows]
        per_seed[f"seed{seed}"] = scores
    write_text_atomic(csv_text(pair_rows, ["seed", "side", "stem", "category", "iou", "mask_area"]),
                      folder / "iou_per_pair.csv")
    groups = list(next(iter(per_seed.values()))["real_test"])
    summary = {}
    for group in dict.fromkeys([*groups, *next(iter(per_seed.values()))["generated"]]):
        entry = {}
        for side in ("generated", "real_test"):
            vals = [s[side][group] for s in per_seed.values() if group in s[side]]
            entry[side] = mean_std(vals) if vals else None
        g, r = entry["generated"], entry["real_test"]
        entry["ratio"] = g["mean"] / r["mean"] if g and r and r["mean"] > 0 else None
        summary[group] = entry
    return {"per_category": summary, "per_seed": per_seed, "n_generated": len(gen_pairs), "n_test": len(test_pairs)}


def adherence(ctx, study: str, generated: Path) -> dict[str, Any]:
    """Mask-adherence summary: generated (and matched real where names match), plus the real training pairs."""
    from ..mask_adherence import drop_unrelated, folder_contrasts, summarize

    cats = ctx.categories
    gen = folder_contrasts(generated, cats)
    real_all = folder_contrasts(ctx.data_root, cats)
    shared = [s for s in gen if s in real_all]
    matched = summarize(gen, drop_unrelated(generated, ctx.data_root, gen, real_all)) if shared else summarize(gen)
    train, _ = ctx.pairs(study)
    train_stems = {p.stem for p in train}
    real_train = summarize({s: v for s, v in real_all.items() if s in train_stems})
    for name, row in matched.items():
        row["cnr_real_train"] = real_train.get(name, {}).get("cnr_generated")
    return matched


def fid_kid(ctx, generated: Path) -> dict[str, Any]:
    """FID/KID rows per category and overall, or ``{"skipped": why}``."""
    from metrics import fid as fidmod

    f = ctx.cfg["fidelity"]
    if not f["fid"]:
        return {"skipped": "disabled in the config (fidelity.fid: false)"}
    try:
        extractor = inception_extractor(f["inception"], ctx.cfg["device"])
    except UserError as exc:
        return {"skipped": str(exc)}
    except ImportError as exc:
        return {"skipped": f"torch-fidelity is not installed ({exc})"}
    rows = fidmod.compare_folders(ctx.data_root, generated, extractor, ctx.categories, cache_dir=fidmod.DEFAULT_CACHE,
                                  batch_size=int(f["batch_size"]), kid_subsets=int(f["kid_subsets"]),
                                  kid_subset_size=int(f["kid_subset_size"]), progress=ctx.progress, log=ctx.log)
    return {"rows": rows, "real": ctx.data_root}


def inception_extractor(weights, device: str):
    """torch-fidelity's Inception-v3 features from the local weights file (a UserError when it is missing)."""
    from metrics.fid import InceptionFeatures

    return InceptionFeatures(weights, device)


def measure(ctx, study: str, folder: Path) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    generated = Path(ctx.outputs(f"{study}.generation")["generated"])
    result = {"study": study, "generated": str(generated),
              "iou": detector_iou(ctx, study, generated, folder),
              "mask_adherence": adherence(ctx, study, generated),
              "fid": fid_kid(ctx, generated)}
    write_json_atomic(result, folder / "fidelity.json")
    iou = result["iou"]["per_category"].get(OVERALL, {})
    g, r = iou.get("generated") or {}, iou.get("real_test") or {}
    ctx.log(f"[{study}.fidelity] detector IoU generated {g.get('mean', float('nan')):.3f} vs real test "
            f"{r.get('mean', float('nan')):.3f}; FID: {result['fid'].get('skipped', 'computed')}")
    return result
