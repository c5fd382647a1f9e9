"""Per-image statistics of the realism card and their real-vs-generated summaries.

Brightness is an image's mean grey level in [0, 1], contrast its pixel standard deviation (both at
the card's common size); mask adherence is :func:`evaluation.mask_adherence.defect_contrast`'s CNR
at native size. Memorisation compares nearest-training-image distances (1 - normalised correlation
at :data:`MEMO_SIDE` px) of generated images with those of real held-out images.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from scipy.stats import binom, ks_2samp

from evaluation.mask_adherence import defect_contrast
from runtime.digest import array_sha256

from .data import ImageSet, resized

MEMO_SIDE = 64
MEMO_QUANTILE = 5.0     # percent: the real-to-train distance that counts as "very close"
MEMO_FACTOR = 2.0       # flag when more than this many times MEMO_QUANTILE % of generated images are that close
MEMO_ALPHA = 0.05       # ... and that many would be unlikely (binomial) at MEMO_QUANTILE %


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b and math.isfinite(a) and math.isfinite(b) else float("nan")


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def _sd(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")


def brightness_summary(real: np.ndarray, generated: np.ndarray) -> dict[str, float]:
    """Mean and sd of per-image brightness, two-sample KS statistic and p-value, spread ratio sd_gen / sd_real."""
    ks = ks_2samp(real, generated) if len(real) and len(generated) else None
    return {"real_mean": _mean(real), "real_sd": _sd(real), "generated_mean": _mean(generated),
            "generated_sd": _sd(generated), "ks": float(ks.statistic) if ks else float("nan"),
            "ks_p": float(ks.pvalue) if ks else float("nan"), "spread_ratio": _ratio(_sd(generated), _sd(real))}


def contrast_summary(real: np.ndarray, generated: np.ndarray) -> dict[str, float]:
    """Mean in-image pixel sd of each set and their ratio generated / real."""
    r, g = _mean(real), _mean(generated)
    return {"real_mean": r, "generated_mean": g, "ratio": _ratio(g, r)}


def image_cnrs(image_set: ImageSet, ring: int = 6) -> np.ndarray:
    """CNR of every pair (NaN where the mask is empty or full)."""
    out = np.full(len(image_set), np.nan)
    for i, (image, mask) in enumerate(zip(image_set.images, image_set.masks)):
        c = defect_contrast(image, mask, ring, where=str(image_set.files[i])) if mask is not None else None
        if c is not None:
            out[i] = c.cnr
    return out


def cnr_summary(real: np.ndarray, generated: np.ndarray) -> dict[str, float]:
    """Mean CNR over the pairs with a measurable mask, and the ratio generated / real."""
    r, g = real[np.isfinite(real)], generated[np.isfinite(generated)]
    return {"real_mean": _mean(r), "generated_mean": _mean(g), "ratio": _ratio(_mean(g), _mean(r)),
            "real_pairs": int(len(r)), "generated_pairs": int(len(g))}


# -- memorisation ----------------------------------------------------------------------------------
def memo_vectors(images: Sequence[np.ndarray]) -> np.ndarray:
    """Rows of unit norm and zero mean (``MEMO_SIDE`` px grey); a flat image gives a zero row."""
    x = resized(images, MEMO_SIDE).reshape(len(images), -1)
    x -= x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 1e-12)


def nearest(queries: np.ndarray, train: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """``(distance, index)`` of each query's nearest training row; distance = 1 - correlation."""
    dist, idx = np.empty(len(queries)), np.empty(len(queries), np.int64)
    for start in range(0, len(queries), chunk):
        corr = queries[start:start + chunk] @ train.T
        idx[start:start + chunk] = corr.argmax(axis=1)
        dist[start:start + chunk] = 1.0 - corr.max(axis=1)
    return np.clip(dist, 0.0, 2.0), idx


def leaked(real: ImageSet, train: ImageSet) -> list[int]:
    """Indices of real images pixel-identical to a training image (a split leak)."""
    seen = {array_sha256(image) for image in train.images}
    return [i for i, image in enumerate(real.images) if array_sha256(image) in seen]


def memo_summary(real_d: np.ndarray, generated_d: np.ndarray) -> dict[str, Optional[float]]:
    """Median and 5th percentile of both distance sets, the fraction of generated images nearer than the
    real 5th percentile, and the memorisation flag.

    The flag needs that fraction above ``MEMO_FACTOR`` x 5 % and, so that a few images in a small set do
    not raise it, a one-sided binomial p-value below ``MEMO_ALPHA`` for that many hits at 5 %.
    """
    def pct(x: np.ndarray, q: float) -> float:
        return float(np.percentile(x, q)) if len(x) else float("nan")

    expected = MEMO_QUANTILE / 100
    threshold = pct(real_d, MEMO_QUANTILE)
    row = {"real_median": pct(real_d, 50), "real_p5": threshold, "generated_median": pct(generated_d, 50),
           "generated_p5": pct(generated_d, MEMO_QUANTILE), "fraction_below_real_p5": float("nan"),
           "binomial_p": float("nan"), "expected_fraction": expected, "real_n": int(len(real_d)),
           "generated_n": int(len(generated_d)), "possible_memorisation": None}
    if len(generated_d) and math.isfinite(threshold):
        hits = int(np.sum(generated_d < threshold))
        row["fraction_below_real_p5"] = hits / len(generated_d)
        row["binomial_p"] = float(binom.sf(hits - 1, len(generated_d), expected))
        row["possible_memorisation"] = bool(row["fraction_below_real_p5"] > MEMO_FACTOR * expected
                                            and row["binomial_p"] < MEMO_ALPHA)
    return row
