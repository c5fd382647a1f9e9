"""Computing the realism card: every metric per category and overall, plus the targets they are read against."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .data import OVERALL, ImageSet, group_indices, resized
from .fwd import WAVELET, fwd_table, sample_ratios
from .metrics import (
    MEMO_SIDE,
    brightness_summary,
    cnr_summary,
    contrast_summary,
    image_cnrs,
    leaked,
    memo_summary,
    memo_vectors,
    nearest,
)
from .reference import DRAWS, FWD_DRAWS, fwd_rows, real_sample_rate, reference_table
from .thresholds import CNR_MIN, FLOOR_FACTOR, KS_MAX, SPREAD_MIN, met


@dataclass
class Inputs:
    """The read image sets and the settings of one card."""

    real: ImageSet
    generated: ImageSet
    train: Optional[ImageSet]
    categories: list[str]
    size: int
    level: int
    seed: int = 0
    draws: int = 1
    ring: int = 6
    ref_draws: int = DRAWS
    ref_fwd_draws: int = FWD_DRAWS


@dataclass
class Stacks:
    """The images of both sets at the common size, and each category's indices."""

    real_x: np.ndarray
    gen_x: np.ndarray
    real_groups: dict[str, np.ndarray]
    gen_groups: dict[str, np.ndarray]


def stacks(inputs: Inputs) -> Stacks:
    """Resize both sets to ``inputs.size`` and group them by category."""
    names = inputs.categories
    return Stacks(resized(inputs.real.images, inputs.size), resized(inputs.generated.images, inputs.size),
                  group_indices(inputs.real, names), group_indices(inputs.generated, names))


def _per_group(s: Stacks, real_v: np.ndarray, gen_v: np.ndarray, summary) -> dict[str, dict]:
    return {name: summary(real_v[idx], gen_v[s.gen_groups[name]]) for name, idx in s.real_groups.items()}


def _memorisation(inputs: Inputs, s: Stacks, warnings: list[str]) -> tuple[Optional[dict], dict]:
    """Per-group memorisation summary and the per-image nearest-training distances."""
    if inputs.train is None:
        return None, {}
    train_v = memo_vectors(inputs.train.images)
    real_d, real_nn = nearest(memo_vectors(inputs.real.images), train_v)
    gen_d, gen_nn = nearest(memo_vectors(inputs.generated.images), train_v)
    leaks = leaked(inputs.real, inputs.train)
    if leaks:
        names = [inputs.real.stems[i] for i in leaks]
        warnings.append(f"split leak: {len(leaks)} --real image(s) are pixel-identical to a --train image "
                        f"({', '.join(names[:5])}{' …' if len(names) > 5 else ''}); they are left out of the "
                        "real-to-train distances")
    keep = np.ones(len(inputs.real), bool)
    keep[leaks] = False
    table = {name: memo_summary(real_d[idx[keep[idx]]], gen_d[s.gen_groups[name]])
             for name, idx in s.real_groups.items()}
    per_image = {"real": (real_d, real_nn), "generated": (gen_d, gen_nn), "leaked": leaks}
    return table, per_image


def real_sample_reference(inputs: Inputs, s: Stacks, real_b: np.ndarray, real_cnr: np.ndarray, fwd: dict[str, dict],
                          warnings: list[str]) -> Optional[dict]:
    """What random sets of training images score on the brightness, CNR and FWD targets (:mod:`.reference`)."""
    if inputs.train is None or not (inputs.ref_draws or inputs.ref_fwd_draws):
        return None
    train_x = resized(inputs.train.images, inputs.size)
    train_groups = group_indices(inputs.train, inputs.categories)
    sizes = {name: len(idx) for name, idx in s.gen_groups.items() if name != OVERALL}
    table: dict = {"draws": 0, "rows": {}, "targets_met": None}
    if inputs.ref_draws:
        table, notes = reference_table(real_b, real_cnr, s.real_groups, train_x.mean(axis=(1, 2)),
                                       image_cnrs(inputs.train, inputs.ring), train_groups, sizes, inputs.seed,
                                       inputs.ref_draws)
        warnings.extend(notes)
    if inputs.ref_fwd_draws:
        ratios = sample_ratios(inputs.real, s.real_x, train_x, train_groups, inputs.categories,
                               {name: row["floor"] for name, row in fwd.items()}, inputs.level, inputs.seed,
                               inputs.draws, inputs.ref_fwd_draws)
        table["fwd"] = fwd_rows(ratios)
    return table


def targets(card: dict) -> list[dict]:
    """One row per category and target: a short key, the target's wording, value, threshold, met (None when not
    measurable) and how often a real sample meets it (None without a reference for it)."""
    rows = []

    def add(cat: str, key: str, target: str, value: float, threshold: float, ok: Optional[bool]) -> None:
        met = ok if value is not None and math.isfinite(value) else None
        rows.append({"category": cat, "key": key, "target": target, "value": value, "threshold": threshold,
                     "met": met})

    for cat in card["categories"]:
        b, c, f = card["brightness"][cat], card["cnr"][cat], card["fwd"][cat]
        add(cat, "KS", f"brightness KS <= {KS_MAX}", b["ks"], KS_MAX, met("ks", b["ks"]) == 1.0)
        add(cat, "spread ratio", f"brightness spread ratio >= {SPREAD_MIN}", b["spread_ratio"], SPREAD_MIN,
            met("spread_ratio", b["spread_ratio"]) == 1.0)
        add(cat, "CNR", f"CNR >= {CNR_MIN} x real", c["ratio"], CNR_MIN, met("cnr_ratio", c["ratio"]) == 1.0)
        add(cat, "same-size FWD", f"same-size FWD <= {FLOOR_FACTOR:g} x real-vs-real floor", f["ratio"], FLOOR_FACTOR,
            f["met"])
        if card["memorisation"] is not None:
            m = card["memorisation"][cat]
            add(cat, "no possible memorisation", "no possible memorisation", m["fraction_below_real_p5"],
                2 * m["expected_fraction"],
                None if m["possible_memorisation"] is None else not m["possible_memorisation"])
    for row in rows:
        row["real_sample_met"] = real_sample_rate(card, row)
    return rows


def _image_rows(image_set: ImageSet, s_x: np.ndarray, cnr: np.ndarray, memo: Optional[tuple]) -> list[dict]:
    rows = []
    for i, stem in enumerate(image_set.stems):
        row = {"stem": stem, "category": image_set.categories[i], "brightness": float(s_x[i].mean()),
               "contrast": float(s_x[i].std()), "cnr": None if math.isnan(cnr[i]) else float(cnr[i])}
        if memo is not None:
            row.update(nn_distance=float(memo[0][i]), nn_train=memo[2].stems[int(memo[1][i])])
        rows.append(row)
    return rows


def build_card(inputs: Inputs, s: Optional[Stacks] = None) -> dict:
    """Every number of the card (see :mod:`evaluation.realism`) as one JSON-ready dict."""
    s = s or stacks(inputs)
    warnings: list[str] = []
    real_b, gen_b = s.real_x.mean(axis=(1, 2)), s.gen_x.mean(axis=(1, 2))
    real_c, gen_c = s.real_x.std(axis=(1, 2)), s.gen_x.std(axis=(1, 2))
    real_cnr, gen_cnr = image_cnrs(inputs.real, inputs.ring), image_cnrs(inputs.generated, inputs.ring)
    memo, memo_images = _memorisation(inputs, s, warnings)
    fwd = fwd_table(inputs.real, s.real_x, inputs.generated, s.gen_x, s.real_groups, s.gen_groups,
                    inputs.categories, inputs.level, inputs.seed, inputs.draws)
    card = {
        "inputs": {"real": str(inputs.real.root), "generated": str(inputs.generated.root),
                   "train": str(inputs.train.root) if inputs.train else None, "n_real": len(inputs.real),
                   "n_generated": len(inputs.generated), "n_train": len(inputs.train) if inputs.train else None},
        "settings": {"size": inputs.size, "seed": inputs.seed, "ring": inputs.ring, "memo_side": MEMO_SIDE,
                     "fwd": {"wavelet": WAVELET, "level": inputs.level, "draws": inputs.draws, "channels": "grey x 3",
                             "floor_factor": FLOOR_FACTOR}},
        "categories": list(s.real_groups),
        "brightness": _per_group(s, real_b, gen_b, brightness_summary),
        "contrast": _per_group(s, real_c, gen_c, contrast_summary),
        "cnr": _per_group(s, real_cnr, gen_cnr, cnr_summary),
        "fwd": fwd,
        "memorisation": memo,
        "reference": real_sample_reference(inputs, s, real_b, real_cnr, fwd, warnings),
        "warnings": warnings,
    }
    for name, row in card["fwd"].items():
        if not row["paired"]:
            warnings.append(f"FWD {name}: not every real half-B image has a generated image of the same mask "
                            "name; the same-size FWD uses a random generated subset of half B's size")
    card["targets"] = targets(card)
    memo_of = {k: (*memo_images[k], inputs.train) for k in ("real", "generated")} if memo_images else {}
    card["images"] = {"real": _image_rows(inputs.real, s.real_x, real_cnr, memo_of.get("real")),
                      "generated": _image_rows(inputs.generated, s.gen_x, gen_cnr, memo_of.get("generated"))}
    if memo_images:
        card["images"]["leaked"] = [inputs.real.stems[i] for i in memo_images["leaked"]]
    return card

