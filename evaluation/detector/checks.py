"""Numbers of a detector config (configs/eval/detector.yaml after ``--set``): finite and in range, one line each.

Called where the config is made (``evaluation.detector.train``, the protocols, the study's ``--plan``), so
a nonsense number is refused before anything trains. Upper bounds keep a typo from eating the memory.
"""
from __future__ import annotations

import math
from typing import Any, Optional

from runtime.errors import UserError

MAX_IMAGE_SIZE = 2048
MAX_BATCH_SIZE = 4096
#: the networks ``model.arch`` names (evaluation/detector/model.py builds them)
ARCHS = ("msinet", "unet")


def _number(value: Any, name: str, low: float, high: float = math.inf, integer: bool = False,
            low_open: bool = False) -> float:
    """``value`` as a finite number in [low, high] (``(low, high]`` with ``low_open``); else a UserError."""
    if isinstance(value, bool) or value is None:
        raise UserError(f"{name} must be a number, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number, got {value!r}") from None
    if integer and (not math.isfinite(x) or not x.is_integer()):
        raise UserError(f"{name} must be a whole number, got {value!r}")
    too_low = x <= low if low_open else x < low
    if not math.isfinite(x) or too_low or x > high:
        span = f"{'>' if low_open else '>='} {low:g}" + ("" if high == math.inf else f" and <= {high:g}")
        raise UserError(f"{name} must be a finite number {span}, got {value!r}; fix it in the config or --set")
    return x


def _optional(value: Any, name: str, low: float, integer: bool = False, low_open: bool = False) -> Optional[float]:
    return None if value is None else _number(value, name, low, integer=integer, low_open=low_open)


def check_detector_config(cfg: Any, where: str = "detector config") -> None:
    """Refuse a detector config whose numbers cannot train (NaN, zero or negative sizes, epochs, rates ...)."""
    data, train = cfg.get("data") or {}, cfg.get("train") or {}
    _number(data.get("image_size"), f"{where}: data.image_size", 16, MAX_IMAGE_SIZE, integer=True)
    _number(train.get("epochs"), f"{where}: train.epochs", 1, integer=True)
    _optional(train.get("min_steps"), f"{where}: train.min_steps", 1, integer=True)
    _number(train.get("batch_size"), f"{where}: train.batch_size", 1, MAX_BATCH_SIZE, integer=True)
    _number(train.get("lr"), f"{where}: train.lr", 0, low_open=True)
    _number(train.get("weight_decay"), f"{where}: train.weight_decay", 0)
    _number(train.get("warmup_epochs"), f"{where}: train.warmup_epochs", 0)
    bce = _number(train.get("bce_weight"), f"{where}: train.bce_weight", 0)
    iou = _number(train.get("iou_weight"), f"{where}: train.iou_weight", 0)
    if bce + iou <= 0:
        raise UserError(f"{where}: train.bce_weight and train.iou_weight are both 0, so nothing would be learned; "
                        "set at least one above 0")
    _number(train.get("seed"), f"{where}: train.seed", 0, integer=True)
    _optional(train.get("num_threads"), f"{where}: train.num_threads", 0, integer=True)
    _optional(train.get("max_minutes"), f"{where}: train.max_minutes", 0, low_open=True)
    share = train.get("real_share")
    if share is not None and (isinstance(share, bool) or not isinstance(share, (int, float))
                              or not 0 < float(share) < 1):
        raise UserError(f"{where}: train.real_share must be a number between 0 and 1 (exclusive, e.g. 0.5), got "
                        f"{share!r}; fix it in the config or --set, or null to draw batches from all pairs")
    predict = cfg.get("predict") or {}
    if predict.get("batch_size") is not None:
        _number(predict.get("batch_size"), f"{where}: predict.batch_size", 1, MAX_BATCH_SIZE, integer=True)
    _number(train.get("side_weight", 0), f"{where}: train.side_weight", 0)
    val = _number(train.get("val_fraction", 0), f"{where}: train.val_fraction", 0, 0.9)
    _number(train.get("val_seed", 0), f"{where}: train.val_seed", 0, integer=True)
    _number(train.get("val_every", 1), f"{where}: train.val_every", 1, integer=True)
    if train.get("keep_best") and val == 0:
        raise UserError(f"{where}: train.keep_best needs validation pairs; set train.val_fraction above 0 "
                        "(e.g. 0.1) or keep_best to false")
    model = cfg.get("model") or {}
    in_chans = model.get("in_chans", 3)
    if in_chans not in (1, 3):
        raise UserError(f"{where}: model.in_chans must be 1 or 3, got {in_chans!r}")
    arch = model.get("arch", "unet")
    if arch not in ARCHS:
        raise UserError(f"{where}: model.arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    if arch == "msinet":
        _check_msinet(model, where)


def _check_msinet(model: Any, where: str) -> None:
    """Widths, depths and dilations an MSINet can be built from."""
    widths, depths, dilations = (list(model.get(k) or []) for k in ("widths", "depths", "dilations"))
    if len(widths) < 2 or len(widths) != len(depths):
        raise UserError(f"{where}: model.widths and model.depths need the same length (at least 2), got "
                        f"{len(widths)} and {len(depths)}")
    if not dilations:
        raise UserError(f"{where}: model.dilations needs at least one entry, e.g. [1, 2, 4, 8]")
    for name, values, low in (("widths", widths, 1), ("depths", depths, 0), ("dilations", dilations, 1)):
        for v in values:
            _number(v, f"{where}: model.{name} entry", low, 4096, integer=True)
    odd = [int(w) for w in widths if int(w) % len(dilations)]
    if odd:
        raise UserError(f"{where}: model.widths {odd} do not split into {len(dilations)} dilation groups; use "
                        "widths divisible by the number of model.dilations")
