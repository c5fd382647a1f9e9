"""What a real sample scores: the card's brightness and CNR targets met by random sets of training images.

A perfect generator's images would be new real images of the same kind. Drawing, per category, as many
training images as there are generated ones and scoring them against the real set exactly as the generated
set is scored shows how often such a set meets each target at these set sizes: the reference that the FWD
floor is for FWD within the real set. The overall set of a draw is the union of its category draws, so it is
composed as the generated set is. Training images are not paired with the real set's masks; their CNR is
their own masks' CNR, which is what the card's whole-set CNR ratio compares.

The FWD target gets the same reference with fewer draws (each is a few Fréchet distances): training sets stand
in for the generated images against the card's real halves and floor (:func:`.fwd.sample_ratios`). The floor
comes from halves of one small real set, so how often a real sample stays within its line varies by category.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from .data import OVERALL
from .metrics import brightness_summary, cnr_summary
from .thresholds import COUNTED_RATE
from .thresholds import met as _met

DRAWS = 200
FWD_DRAWS = 30
COLUMNS = ("ks", "spread_ratio", "cnr_ratio")


def _nan_row(n: int, draws: int) -> dict:
    row: dict = {"n": n, "draws": draws, "pool": 0}
    for col in COLUMNS:
        row[f"{col}_median"] = float("nan")
        row[f"{col}_met"] = float("nan")
    return row


def _score(real_b: np.ndarray, real_cnr: np.ndarray, b: np.ndarray, cnr: np.ndarray) -> dict[str, float]:
    s, c = brightness_summary(real_b, b), cnr_summary(real_cnr, cnr)
    return {"ks": s["ks"], "spread_ratio": s["spread_ratio"], "cnr_ratio": c["ratio"]}


def reference_table(real_b: np.ndarray, real_cnr: np.ndarray, real_groups: dict[str, np.ndarray],
                    train_b: np.ndarray, train_cnr: np.ndarray, train_groups: dict[str, np.ndarray],
                    sizes: dict[str, int], seed: int = 0, draws: int = DRAWS) -> tuple[dict, list[str]]:
    """Score ``draws`` seeded sets of ``sizes[category]`` training images per category against the real set.

    Returns ``({"draws", "rows", "targets_met"}, warnings)``: per category (and overall) the median KS, spread
    ratio and CNR ratio and the fraction of draws meeting each target; the mean, 5th and 95th percentile of
    the number of targets a draw meets, of how many, and the fraction of draws meeting all of them. A
    category with fewer training images than ``sizes`` asks for is left out (NaN) with a warning.
    """
    cats = [c for c in real_groups if c != OVERALL]
    warnings, drawable = [], []
    for c in cats:
        pool, n = len(train_groups.get(c, ())), sizes.get(c, 0)
        if n and pool >= n:
            drawable.append(c)
        elif n:
            warnings.append(f"real-sample reference, {c}: {pool} training image(s) for {n} generated; left out")
    groups = drawable + [OVERALL] if drawable else []
    real_of = {c: real_groups[c] for c in drawable}
    if drawable:
        real_of[OVERALL] = np.concatenate([real_groups[c] for c in drawable])
    values = {c: {col: np.full(draws, np.nan) for col in COLUMNS} for c in groups}
    rng = np.random.default_rng(seed)
    for d in range(draws if drawable else 0):
        picks = {c: rng.choice(train_groups[c], sizes[c], replace=False) for c in drawable}
        picks[OVERALL] = np.concatenate([picks[c] for c in drawable])
        for c, idx in picks.items():
            r = real_of[c]
            for col, v in _score(real_b[r], real_cnr[r], train_b[idx], train_cnr[idx]).items():
                values[c][col][d] = v
    hits = {c: {col: np.array([_met(col, v) for v in values[c][col]]) for col in COLUMNS} for c in groups}
    rows = {c: _row(values.get(c), hits.get(c), sizes, c, drawable, train_groups, draws) for c in cats + [OVERALL]}
    counted = [hits[c][col] for c in groups for col in COLUMNS if np.isfinite(rows[c][f"{col}_met"])]
    counts = np.nansum(counted, axis=0) if counted else np.zeros(draws)
    summary = {"mean": float(np.mean(counts)), "p5": float(np.percentile(counts, 5)),
               "p95": float(np.percentile(counts, 95)), "of": len(counted),
               "all_met": float(np.mean(counts == len(counted)))} if groups else None
    return {"draws": draws, "rows": rows, "targets_met": summary}, warnings


def fwd_rows(ratios: dict[str, np.ndarray]) -> dict:
    """Per group: median, 5th and 95th percentile of real-sample FWD/floor ratios and the fraction within the line."""
    rows = {}
    for name, r in ratios.items():
        r = r[np.isfinite(r)]
        rows[name] = {"draws": int(len(r)), "median": float(np.median(r)) if len(r) else float("nan"),
                      "p5": float(np.percentile(r, 5)) if len(r) else float("nan"),
                      "p95": float(np.percentile(r, 95)) if len(r) else float("nan"),
                      "met": float(np.mean([_met("fwd_ratio", v) for v in r])) if len(r) else float("nan")}
    return rows


def _row(values: Optional[dict], hits: Optional[dict], sizes: dict[str, int], c: str, drawable: list[str],
         train_groups: dict[str, np.ndarray], draws: int) -> dict:
    if values is None:
        return _nan_row(sizes.get(c, 0), draws)
    members = drawable if c == OVERALL else [c]
    row: dict = {"n": int(sum(sizes[k] for k in members)), "draws": draws,
                 "pool": int(sum(len(train_groups[k]) for k in members))}
    for col in COLUMNS:
        finite = np.isfinite(values[col])
        row[f"{col}_median"] = float(np.median(values[col][finite])) if finite.any() else float("nan")
        row[f"{col}_met"] = float(np.mean(hits[col][finite])) if finite.any() else float("nan")
    return row


def _number(x: Optional[float]) -> float:
    return float("nan") if x is None else float(x)


def _known(x: Optional[float]) -> bool:
    """A finite value (a card read back from JSON has ``None`` where it computed NaN)."""
    return math.isfinite(_number(x))


def generated_met(card: dict) -> Optional[int]:
    """How many of the reference's targets the card's generated set meets (None without a reference)."""
    ref = card.get("reference")
    if not ref or not ref["targets_met"]:
        return None
    where = {"ks": ("brightness", "ks"), "spread_ratio": ("brightness", "spread_ratio"), "cnr_ratio": ("cnr", "ratio")}
    met = 0
    for c, row in ref["rows"].items():
        for col in COLUMNS:
            if _known(row[f"{col}_met"]):
                section, key = where[col]
                met += _met(col, _number(card[section][c][key])) == 1.0
    return int(met)


RATE_OF_KEY = {"KS": "ks", "spread ratio": "spread_ratio", "CNR": "cnr_ratio"}


def target_key(t: dict) -> str:
    """A target row's short key (cards written before targets had keys: read off the target's wording)."""
    return t.get("key") or str(t.get("target", "?")).split(" <=")[0].split(" >=")[0].replace("brightness ", "")


def real_sample_rate(card: dict, t: dict) -> Optional[float]:
    """How often a real sample meets target row ``t`` in the card's reference draws; None where the card has no
    reference for it (the memorisation targets never have one)."""
    ref, key, cat = card.get("reference") or {}, target_key(t), t.get("category")
    if key in RATE_OF_KEY:
        rate = ((ref.get("rows") or {}).get(cat) or {}).get(f"{RATE_OF_KEY[key]}_met")
    elif key == "same-size FWD":
        rate = ((ref.get("fwd") or {}).get(cat) or {}).get("met")
    else:
        return None
    return float(rate) if _known(rate) else None


def counted_met(card: dict, min_rate: float = COUNTED_RATE) -> Optional[tuple[int, int]]:
    """``(met, of)`` over the targets a real sample meets in at least ``min_rate`` of its draws, and those the
    reference has no rate for; None for a card without a reference."""
    if not card.get("reference"):
        return None
    targets = [t for t in card.get("targets", []) if isinstance(t, dict)]
    rates = [real_sample_rate(card, t) for t in targets]
    counted = [t for t, r in zip(targets, rates) if r is None or r >= min_rate]
    return sum(bool(t.get("met")) for t in counted), len(counted)
