"""The mask producer's sampling settings (:class:`SampleSettings`), read by sampling and calibration alike."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from dataset.categories import Category
from ldm.diffusion.samplers import SAMPLERS
from runtime.cli import MAX_SIDE
from runtime.errors import UserError

from .config import SCHEMA
from .postprocess import UPSAMPLING

_DEFAULT = SCHEMA["sample"]


@dataclass
class SampleSettings:
    """Sampling settings; defaults from :data:`maskgen.config.SCHEMA` (its ``sample`` section)."""

    sampler: str = _DEFAULT["sampler"]
    steps: int = _DEFAULT["steps"]
    eta: float = _DEFAULT["eta"]
    guidance: float = _DEFAULT["guidance"]
    clip_x0: bool = _DEFAULT["clip_x0"]
    threshold: float = _DEFAULT["threshold"]
    low_threshold: Optional[float] = _DEFAULT["low_threshold"]
    upsample: str = _DEFAULT["upsample"]
    min_area: float = _DEFAULT["min_area"]
    size: int = _DEFAULT["size"]
    batch_size: int = _DEFAULT["batch_size"]
    max_retries: int = _DEFAULT["max_retries"]
    seed: int = 0
    thresholds: dict[str, float] = field(default_factory=dict)  # per category prefix (maskgen.calibrate)

    def level(self, cat: Category) -> float:
        """The binarisation threshold for ``cat``: its calibrated one, else ``threshold``."""
        return float(self.thresholds.get(cat.prefix, self.threshold))

    def check(self, timesteps: Optional[int] = None) -> None:
        """Refuse values that would crash or silently give garbage; ``timesteps``: the model's schedule length."""
        for name in ("guidance", "eta", "threshold", "min_area"):
            if not math.isfinite(float(getattr(self, name))):
                raise UserError(f"--{name} must be a finite number, got {getattr(self, name)}")
        if self.eta < 0:
            raise UserError(f"--eta must be >= 0, got {self.eta}")
        if timesteps is not None and self.steps > timesteps:
            raise UserError(f"--steps {self.steps} exceeds the {timesteps} diffusion timesteps the model was "
                            f"trained with; use at most {timesteps}")
        if self.sampler not in SAMPLERS:
            raise UserError(f"--sampler {self.sampler!r} is not known; use one of {', '.join(SAMPLERS)}")
        if self.sampler != "ddim" and self.eta:
            raise UserError(f"--eta applies to the ddim sampler only (got sampler {self.sampler!r})")
        if not 0.0 < self.threshold < 1.0:
            raise UserError(f"--threshold must be between 0 and 1 (exclusive), got {self.threshold}")
        if self.low_threshold is not None and not 0.0 < float(self.low_threshold) < 1.0:
            raise UserError(f"--low_threshold must be between 0 and 1 (exclusive) or unset, got {self.low_threshold}")
        if self.upsample not in UPSAMPLING:
            raise UserError(f"--upsample must be one of {', '.join(UPSAMPLING)}, got {self.upsample!r}")
        if not 0.0 <= self.min_area < 1.0:
            raise UserError(f"--min_area is a fraction of the image in [0, 1), got {self.min_area}")
        if not 8 <= self.size <= MAX_SIDE:
            raise UserError(f"--size must be from 8 to {MAX_SIDE} pixels, got {self.size}")
        if self.batch_size < 1 or self.steps < 1 or self.max_retries < 0:
            raise UserError("--batch_size and --steps must be positive and --max_retries >= 0")
