"""Paired comparisons of detector settings against a baseline setting on the same test images.

For each setting and each detector seed trained under both, the difference of S (setting - baseline, same
seed) is one paired difference; their mean and spread (std, ddof 1) say how much of a gain the seeds agree on.
Per test image, the S difference averaged over those seeds is resampled with replacement (seeded draws) for
a bootstrap 95 % interval of the mean difference, so the test images' sampling is covered too. The dataset S
is the mean of per-image S (pysodmetrics), so both views have the same mean.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np

DRAWS = 1000
LEVEL = 0.95


def bootstrap_interval(values: Sequence[float], draws: int = DRAWS, seed: int = 0,
                       level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of the mean of ``values`` over ``draws`` resamples with replacement."""
    x = np.asarray(values, np.float64)
    if x.size == 0:
        return math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, x.size, size=(int(draws), x.size))
    means = x[idx].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def paired_differences(rows: Sequence[Mapping], baseline: str,
                       per_image: Optional[Mapping[tuple[str, str], Mapping[str, float]]] = None,
                       metric: str = "S", draws: int = DRAWS, seed: int = 0) -> list[dict]:
    """Every setting but ``baseline`` against it: ``{setting, baseline, per_seed, seeds, mean, std, ci_low,
    ci_high, n_images, draws}``.

    ``rows`` hold ``detector`` (the seed's run), ``setting`` and ``metric``; ``per_image`` maps
    ``(detector, setting)`` to ``{test stem: S}``. Without per-image values for a pair of runs the interval is
    NaN (``n_images`` 0)."""
    value = {(r["detector"], r["setting"]): float(r[metric]) for r in rows}
    out = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        if setting == baseline:
            continue
        seeds = [d for d, s in value if s == setting and (d, baseline) in value]
        if not seeds:
            continue
        diffs = {d: value[d, setting] - value[d, baseline] for d in seeds}
        d = np.array(list(diffs.values()))
        ci, n_images = (math.nan, math.nan), 0
        maps = [(per_image or {}).get((s, setting)) for s in seeds] + [(per_image or {}).get((s, baseline))
                                                                         for s in seeds]
        if all(maps):
            stems = sorted(set.intersection(*(set(m) for m in maps)))
            if stems:
                per = np.mean([[per_image[s, setting][t] - per_image[s, baseline][t] for t in stems]
                               for s in seeds], axis=0)
                ci, n_images = bootstrap_interval(per, draws, seed), len(stems)
        out.append({"setting": setting, "baseline": baseline, "per_seed": diffs, "seeds": len(seeds),
                    "mean": float(d.mean()), "std": float(d.std(ddof=1)) if d.size > 1 else math.nan,
                    "ci_low": ci[0], "ci_high": ci[1], "n_images": n_images, "draws": draws})
    return out


def _f(value: float, fmt: str = "+.4f") -> str:
    return format(value, fmt) if isinstance(value, (int, float)) and math.isfinite(value) else "–"


def paired_markdown(paired: Sequence[Mapping], metric: str = "S") -> str:
    """The paired differences as a markdown table with a one-line legend."""
    if not paired:
        return ""
    base = paired[0]["baseline"]
    lines = [f"| setting | {metric} − {base}, per seed | mean | std over seeds | bootstrap 95 % (test images) |",
             "|---|---|---:|---:|---|"]
    for p in paired:
        per = ", ".join(f"{d} {_f(v)}" for d, v in p["per_seed"].items())
        ci = f"[{_f(p['ci_low'])}, {_f(p['ci_high'])}]" if p["n_images"] else "– (no per-image scores)"
        lines.append(f"| {p['setting']} | {per} | {_f(p['mean'])} | {_f(p['std'], '.4f')} | {ci} |")
    n = max((p["n_images"] for p in paired), default=0)
    return "\n".join(lines) + (f"\n\nPaired by detector seed (same seed, same test images). Interval: the per-image "
                               f"{metric} difference averaged over seeds, {paired[0]['draws']} seeded resamples of the "
                               f"{n} test images.\n")
