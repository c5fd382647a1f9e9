"""The card's target lines, in one place."""
from __future__ import annotations

import math

KS_MAX = 0.2
SPREAD_MIN = 0.8
CNR_MIN = 0.9
FLOOR_FACTOR = 2.0       # same-size FWD at most this many times the real-vs-real floor
COUNTED_RATE = 0.5       # a target counts when a real sample meets it in at least this share of draws


def met(metric: str, value: float) -> float:
    """1.0 if ``value`` of ``metric`` (``ks``, ``spread_ratio``, ``cnr_ratio`` or ``fwd_ratio``) meets its line,
    else 0.0; NaN when the value is not finite."""
    if not math.isfinite(value):
        return float("nan")
    lines = {"ks": value <= KS_MAX, "spread_ratio": value >= SPREAD_MIN, "cnr_ratio": value >= CNR_MIN,
             "fwd_ratio": value <= FLOOR_FACTOR}
    return float(lines[metric])
