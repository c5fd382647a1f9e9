"""A mask producer's calibration file: where it lives, the settings it depends on, and reading it back
(written by :mod:`maskgen.calibrate`, read by :mod:`maskgen.sample`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

from runtime.errors import UserError
from runtime.safe_load import first_line

from .checkpoint import resolve_checkpoint
from .settings import SampleSettings

CALIBRATION = "calibration.json"


def calibration_path(ckpt: str | Path) -> Path:
    """``calibration.json`` of the run folder a checkpoint belongs to."""
    path = resolve_checkpoint(ckpt)
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return run / CALIBRATION


def read_calibration(path: str | Path, settings: Optional[SampleSettings] = None,
                     ckpt: Optional[Mapping[str, Any]] = None) -> dict[str, float]:
    """The per-category thresholds of a ``calibration.json``; a one-line error when it is unusable, was
    fitted with other sampling / decoding settings than ``settings`` or on another training step of ``ckpt``."""
    import json

    path = Path(path)
    try:
        data = json.loads(path.read_text())
        levels = {str(k): float(v) for k, v in data["thresholds"].items()}
        fitted = dict(data["settings"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{path}: not a readable calibration ({first_line(exc)}); rerun python -m maskgen.calibrate "
                        "or pass --calibration none") from None
    bad = {k: v for k, v in levels.items() if not 0.0 < v < 1.0}
    if bad:
        raise UserError(f"{path}: thresholds must be in (0, 1), got {bad}; rerun python -m maskgen.calibrate")
    if settings is not None:
        now = fitted_settings(settings)
        differ = [f"{k} {fitted.get(k)!r} vs {v!r}" for k, v in now.items() if fitted.get(k) != v]
        if differ:
            raise UserError(f"{path}: fitted with other settings than these ({', '.join(differ)}); rerun "
                            "python -m maskgen.calibrate with the same flags, or pass --calibration none")
    if ckpt is not None and data.get("step") != ckpt.get("step"):
        raise UserError(f"{path}: fitted on the model at step {data.get('step')}, but {ckpt.get('path')} is at step "
                        f"{ckpt.get('step')} (trained further since); rerun python -m maskgen.calibrate, or pass "
                        "--calibration none")
    return levels


def fitted_settings(settings: SampleSettings) -> dict[str, Any]:
    """The settings a calibration depends on (those that change the decoded masks, bar the seed)."""
    return {k: getattr(settings, k) for k in ("sampler", "steps", "eta", "guidance", "clip_x0", "upsample",
                                              "low_threshold", "min_area", "size")}
