"""Paired differences of detector settings (evaluation.paired) on small synthetic maps."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from evaluation.paired import bootstrap_interval, paired_differences, paired_markdown
from evaluation.sod_eval import evaluate_folders


def _maps(folder, masks: dict, noise: float, seed: int):
    """Predicted maps: each mask blurred towards grey by ``noise`` (more noise, lower S)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for stem, mask in masks.items():
        pred = np.clip(mask * (1 - noise) + rng.uniform(0, noise, mask.shape), 0, 1)
        Image.fromarray((pred * 255).astype(np.uint8)).save(folder / f"{stem}.png")
    return folder


def test_paired_differences_of_per_image_s_from_synthetic_maps(tmp_path):
    rng = np.random.default_rng(0)
    masks = {}
    for i in range(12):
        m = np.zeros((24, 24))
        y, x = rng.integers(2, 14, 2)
        m[y:y + 8, x:x + 8] = 1
        masks[f"In_{i + 1}"] = m
    (tmp_path / "gt").mkdir()
    for stem, m in masks.items():
        Image.fromarray((m * 255).astype(np.uint8)).save(tmp_path / "gt" / f"{stem}.png")
    rows, per_image = [], {}
    for seed in (0, 1, 2):
        for setting, noise in (("real", 0.5 + 0.05 * seed), ("real+gen", 0.3 + 0.05 * seed), ("same", None)):
            scores: dict[str, float] = {}
            folder = tmp_path / f"{setting}{seed}"
            if noise is None:  # the same maps as the baseline: every difference is 0
                folder = tmp_path / f"real{seed}"
            else:
                _maps(folder, masks, noise, seed)
            overall = evaluate_folders(folder, tmp_path / "gt", log=lambda m: None, per_image=scores)["overall"]
            assert len(scores) == 12 and np.mean(list(scores.values())) == pytest.approx(overall["S"])
            rows.append({"detector": f"seed{seed}", "setting": setting, "S": overall["S"]})
            per_image[f"seed{seed}", setting] = scores
    paired = {p["setting"]: p for p in paired_differences(rows, "real", per_image, draws=500, seed=3)}
    gain, same = paired["real+gen"], paired["same"]
    s = {(r["detector"], r["setting"]): r["S"] for r in rows}
    assert gain["per_seed"] == pytest.approx({f"seed{k}": s[f"seed{k}", "real+gen"] - s[f"seed{k}", "real"]
                                              for k in range(3)})
    assert gain["seeds"] == 3 and gain["mean"] > 0 and gain["std"] == pytest.approx(
        np.std(list(gain["per_seed"].values()), ddof=1))
    assert gain["n_images"] == 12 and 0 < gain["ci_low"] < gain["mean"] < gain["ci_high"]
    assert (same["mean"], same["std"], same["ci_low"], same["ci_high"]) == (0, 0, 0, 0)
    again = paired_differences(rows, "real", per_image, draws=500, seed=3)[0]
    assert (again["ci_low"], again["ci_high"]) == (gain["ci_low"], gain["ci_high"])  # seeded
    assert "| real+gen | seed0 +" in paired_markdown(list(paired.values()))
    # without per-image scores: the per-seed differences, no interval
    bare = paired_differences(rows, "real")[0]
    assert bare["mean"] == pytest.approx(gain["mean"]) and bare["n_images"] == 0 and math.isnan(bare["ci_low"])
    assert "no per-image scores" in paired_markdown([bare])
    one = paired_differences([r for r in rows if r["detector"] == "seed0"], "real")[0]
    assert one["seeds"] == 1 and math.isnan(one["std"])


def test_bootstrap_interval_covers_the_mean_at_about_the_normal_width():
    x = np.random.default_rng(1).normal(0.02, 0.05, 400)
    lo, hi = bootstrap_interval(x, draws=1000, seed=0)
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert lo < x.mean() < hi and (hi - lo) / 2 == pytest.approx(half, rel=0.15)
    assert bootstrap_interval([0.1] * 5) == pytest.approx((0.1, 0.1))
    assert all(math.isnan(v) for v in bootstrap_interval([]))
