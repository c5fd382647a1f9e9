"""Saliency-detection metrics through pysodmetrics, the implementation the SOD field uses.

* ``S``     structure measure, alpha = 0.5                       (``py_sod_metrics.Smeasure``)
* ``MAE``   mean absolute error of the min-max normalised map     (``py_sod_metrics.MAE``)
* ``E_max`` maximum over 256 thresholds of the mean E-measure     (``py_sod_metrics.Emeasure``)
* ``F_max`` maximum over 256 thresholds of F(beta^2 = 0.3) computed from the dataset-mean
  precision and recall curves, as in the SOD literature           (``py_sod_metrics.Fmeasure``)
* ``IoU`` / ``Dice``  per-image IoU and Dice of the map binarised at 0.5, averaged over images
  (``py_sod_metrics.FmeasureV2`` binary handlers; an empty prediction on an empty mask scores 0
  there, as pysodmetrics defines it).

Inputs follow pysodmetrics: ``pred`` uint8 grey map 0..255 (min-max normalised inside the library),
``gt`` uint8 with foreground > 128 (or a boolean mask, converted here).
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Iterable, Mapping

import numpy as np
import py_sod_metrics as sod

METRICS = ("S", "MAE", "E_max", "F_max", "IoU", "Dice")
#: Column titles in the paper's tables.
TITLES = {"S": "S", "MAE": "MAE", "E_max": "E-max", "F_max": "F-max", "IoU": "mIoU", "Dice": "Dice"}
#: True where larger is better.
HIGHER_IS_BETTER = {"S": True, "MAE": False, "E_max": True, "F_max": True, "IoU": True, "Dice": True}


def as_uint8_gt(gt: np.ndarray) -> np.ndarray:
    """Ground truth as pysodmetrics wants it: uint8, foreground 255."""
    gt = np.asarray(gt)
    if gt.dtype == bool:
        return gt.astype(np.uint8) * 255
    return gt.astype(np.uint8)


def as_uint8_pred(pred: np.ndarray) -> np.ndarray:
    """A prediction as a uint8 map; float maps are taken to be probabilities in [0, 1]."""
    pred = np.asarray(pred)
    if pred.dtype == bool:
        return pred.astype(np.uint8) * 255
    if np.issubdtype(pred.dtype, np.floating):
        return np.clip(np.rint(pred * 255.0), 0, 255).astype(np.uint8)
    return pred.astype(np.uint8)


class SODMetrics:
    """Accumulates the six metrics over (prediction, ground truth) pairs of one group."""

    def __init__(self, alpha: float = 0.5, beta2: float = 0.3):
        self.sm = sod.Smeasure(alpha=alpha)
        self.mae = sod.MAE()
        self.em = sod.Emeasure()
        with warnings.catch_warnings():  # classic Fmeasure: mean-PR-curve F, as papers report
            warnings.simplefilter("ignore")
            self.fm = sod.Fmeasure(beta=beta2)
        self.binary = sod.FmeasureV2({
            "iou": sod.IOUHandler(with_dynamic=False, with_adaptive=False, with_binary=True,
                                  sample_based=True),
            "dice": sod.DICEHandler(with_dynamic=False, with_adaptive=False, with_binary=True,
                                    sample_based=True),
        })
        self.count = 0

    def step(self, pred: np.ndarray, gt: np.ndarray) -> None:
        pred, gt = as_uint8_pred(pred), as_uint8_gt(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
        for metric in (self.sm, self.mae, self.em, self.fm, self.binary):
            metric.step(pred=pred, gt=gt)
        self.count += 1

    def per_image_s(self) -> list[float]:
        """S of every image stepped so far, in order (their mean is ``results()["S"]``)."""
        return [float(v) for v in self.sm.sms]

    def results(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no samples were evaluated")
        binary = self.binary.get_results()
        return {
            "S": float(self.sm.get_results()["sm"]),
            "MAE": float(self.mae.get_results()["mae"]),
            "E_max": float(np.max(self.em.get_results()["em"]["curve"])),
            "F_max": float(np.max(self.fm.get_results()["fm"]["curve"])),
            "IoU": float(binary["iou"]["binary"]),
            "Dice": float(binary["dice"]["binary"]),
        }


class GroupedSODMetrics:
    """Per-category and overall metrics: ``step(pred, gt, group)`` then ``results()``."""

    OVERALL = "overall"

    def __init__(self, **kwargs):
        self._kwargs = kwargs
        self.groups: "OrderedDict[str, SODMetrics]" = OrderedDict()
        self.overall = SODMetrics(**kwargs)

    def step(self, pred: np.ndarray, gt: np.ndarray, group: str | None = None) -> None:
        self.overall.step(pred, gt)
        if group is not None:
            if group not in self.groups:
                self.groups[group] = SODMetrics(**self._kwargs)
            self.groups[group].step(pred, gt)

    def results(self) -> "OrderedDict[str, dict[str, float]]":
        """``{group: {metric: value, "n": count}}`` with ``overall`` last."""
        out: "OrderedDict[str, dict]" = OrderedDict()
        for name, metric in self.groups.items():
            out[name] = {**metric.results(), "n": metric.count}
        out[self.OVERALL] = {**self.overall.results(), "n": self.overall.count}
        return out


def evaluate_arrays(preds: Iterable[np.ndarray], gts: Iterable[np.ndarray],
                    groups: Iterable[str] | None = None) -> "OrderedDict[str, dict]":
    """Metrics for in-memory maps; ``groups`` gives each pair's category (optional)."""
    acc = GroupedSODMetrics()
    groups = list(groups) if groups is not None else None
    for i, (pred, gt) in enumerate(zip(preds, gts)):
        acc.step(pred, gt, None if groups is None else groups[i])
    return acc.results()


def binary_iou(pred: np.ndarray, mask: np.ndarray) -> float:
    """IoU of two boolean masks; two empty masks agree perfectly (1.0)."""
    pred, mask = np.asarray(pred, bool), np.asarray(mask, bool)
    union = np.count_nonzero(pred | mask)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(pred & mask) / union)


def format_results(results: Mapping[str, Mapping[str, float]], metrics=METRICS) -> str:
    """A plain-text table of grouped results (for logs)."""
    head = f"{'group':<12}{'n':>6}" + "".join(f"{TITLES[m]:>9}" for m in metrics)
    lines = [head]
    for group, row in results.items():
        lines.append(f"{group:<12}{int(row.get('n', 0)):>6}"
                     + "".join(f"{row[m]:>9.4f}" for m in metrics))
    return "\n".join(lines)
