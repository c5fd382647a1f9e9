"""SOD metrics: hand-made cases and agreement with direct pysodmetrics calls."""
from __future__ import annotations

import warnings

import numpy as np
import py_sod_metrics as sod
import pytest

from metrics.sod import GroupedSODMetrics, binary_iou, evaluate_arrays


def _square_mask(size=40, lo=10, hi=26):
    gt = np.zeros((size, size), bool)
    gt[lo:hi, lo:hi] = True
    return gt


def _overall(pred, gt):
    return evaluate_arrays([pred], [gt])["overall"]


def test_perfect_prediction():
    gt = _square_mask()
    r = _overall(gt.astype(np.uint8) * 255, gt)
    assert r["S"] == pytest.approx(1.0, abs=1e-9)
    assert r["MAE"] == 0.0
    # pysodmetrics adds eps terms to the enhanced-alignment matrix: 1 + O(1e-3)
    assert r["E_max"] == pytest.approx(1.0, abs=1e-3)
    assert r["F_max"] == pytest.approx(1.0, abs=1e-9)
    assert r["IoU"] == 1.0 and r["Dice"] == 1.0


def test_inverted_prediction():
    gt = _square_mask()
    r = _overall((~gt).astype(np.uint8) * 255, gt)
    area = gt.mean()
    assert r["S"] == pytest.approx(0.0, abs=1e-9)
    assert r["MAE"] == pytest.approx(1.0)
    assert r["IoU"] == 0.0 and r["Dice"] == 0.0
    # the best threshold keeps every pixel: precision = area, recall = 1
    assert r["F_max"] == pytest.approx(1.3 * area / (0.3 * area + 1.0), rel=1e-9)
    assert r["E_max"] < 0.3


def test_all_zero_prediction_on_empty_mask():
    empty = np.zeros((32, 32), bool)
    r = _overall(np.zeros((32, 32), np.uint8), empty)
    assert r["S"] == pytest.approx(1.0)
    assert r["MAE"] == 0.0
    assert r["E_max"] == pytest.approx(1.0, abs=1e-3)
    assert r["F_max"] == 0.0  # precision and recall are 0/0 -> 0 in pysodmetrics
    assert binary_iou(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0


def test_all_zero_prediction_on_non_empty_mask():
    gt = _square_mask()
    r = _overall(np.zeros(gt.shape, np.uint8), gt)
    assert r["MAE"] == pytest.approx(gt.mean())
    assert r["IoU"] == 0.0 and r["Dice"] == 0.0
    assert r["S"] < 0.5
    assert r["F_max"] < 0.5


def test_float_and_bool_predictions_are_accepted():
    gt = _square_mask()
    a = _overall(gt.astype(np.float32), gt)
    b = _overall(gt, gt)
    assert a == pytest.approx(b)


def test_agrees_with_direct_pysodmetrics_calls():
    rng = np.random.default_rng(0)
    preds, gts = [], []
    for i in range(6):
        gt = np.zeros((48, 48), np.uint8)
        y, x = rng.integers(0, 30, 2)
        gt[y:y + 12 + i, x:x + 10] = 255
        noise = rng.normal(0, 40, gt.shape)
        preds.append(np.clip(gt * 0.7 + 40 + noise, 0, 255).astype(np.uint8))
        gts.append(gt)
    ours = evaluate_arrays(preds, gts)["overall"]
    sm, mae, em = sod.Smeasure(), sod.MAE(), sod.Emeasure()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fm = sod.Fmeasure()
    v2 = sod.FmeasureV2({"iou": sod.IOUHandler(with_dynamic=False, with_adaptive=False, with_binary=True),
                         "dice": sod.DICEHandler(with_dynamic=False, with_adaptive=False, with_binary=True)})
    for p, g in zip(preds, gts):
        for m in (sm, mae, em, fm, v2):
            m.step(pred=p, gt=g)
    assert ours["S"] == pytest.approx(sm.get_results()["sm"], abs=1e-12)
    assert ours["MAE"] == pytest.approx(mae.get_results()["mae"], abs=1e-12)
    assert ours["E_max"] == pytest.approx(em.get_results()["em"]["curve"].max(), abs=1e-12)
    assert ours["F_max"] == pytest.approx(fm.get_results()["fm"]["curve"].max(), abs=1e-12)
    assert ours["IoU"] == pytest.approx(v2.get_results()["iou"]["binary"], abs=1e-12)
    assert ours["Dice"] == pytest.approx(v2.get_results()["dice"]["binary"], abs=1e-12)
    assert 0.5 < ours["S"] < 1.0


def test_groups_and_overall():
    gt = _square_mask()
    acc = GroupedSODMetrics()
    acc.step(gt, gt, "a")
    acc.step(~gt, gt, "b")
    res = acc.results()
    assert list(res) == ["a", "b", "overall"]
    assert res["a"]["S"] == pytest.approx(1.0) and res["b"]["S"] == pytest.approx(0.0)
    assert res["overall"]["n"] == 2 and res["overall"]["MAE"] == pytest.approx(0.5)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        evaluate_arrays([np.zeros((4, 4))], [np.zeros((5, 5), bool)])
