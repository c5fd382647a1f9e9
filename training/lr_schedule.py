"""The learning-rate schedule of every trainer here: linear warm-up, then constant or cosine to 0."""
from __future__ import annotations

import math

KINDS = ("constant", "cosine")


def lr_factor(step: int, warmup: int, total: int = 0, kind: str = "constant",
              warmup_from_zero: bool = True) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    Warm-up rises linearly over ``warmup`` steps: from 0 at step 0 when ``warmup_from_zero`` (as
    transformers' schedules, which the original DefFiller uses, so its first step is a no-op), else
    from ``1 / warmup`` (every step moves the weights). ``cosine`` then decays to 0 at ``total``.
    """
    if kind not in KINDS:
        raise ValueError(f"schedule kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if step < warmup:
        return (step if warmup_from_zero else step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


class WarmupSchedule:
    """:func:`lr_factor` as a ``LambdaLR`` callable (an object, so its settings are in the scheduler's state)."""

    def __init__(self, kind: str, warmup: int, total: int, warmup_from_zero: bool = True) -> None:
        self.kind, self.warmup, self.total = kind, int(warmup), int(total)
        self.warmup_from_zero = bool(warmup_from_zero)

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.warmup, self.total, self.kind, self.warmup_from_zero)
