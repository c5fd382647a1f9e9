"""Bad input for the folder-based metrics: unmatched names, wrong sizes, non-binary masks,
empty folders -- each a one-line message."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dataset.folders import load_map_pairs
from evaluation import sod_eval
from runtime.errors import UserError, run_cli


def _mask(size=32):
    m = np.zeros((size, size), np.uint8)
    m[8:20, 10:24] = 255
    return m


def _setup(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    for name in ("In_1", "Pa_1", "Sc_1", "Sc_2"):
        Image.fromarray(_mask()).save(gt / f"{name}.png")
    for name in ("In_1", "Pa_1", "Sc_1"):
        Image.fromarray(_mask()).save(pred / f"{name}.png")
    return pred, gt


def test_unmatched_names_are_listed_and_skipped(tmp_path):
    pred, gt = _setup(tmp_path)
    Image.fromarray(_mask()).save(pred / "Pa_9.png")
    logs = []
    maps = load_map_pairs(pred, gt, log=logs.append)
    assert maps.stems == ["In_1", "Pa_1", "Sc_1"]
    assert maps.groups == ["inclusion", "patches", "scratches"]
    assert any("1 predicted map(s) without a matching ground-truth mask: Pa_9" in m for m in logs)
    assert any("1 ground-truth mask(s) without a matching predicted map: Sc_2" in m for m in logs)
    with pytest.raises(UserError, match="Pa_9"):
        load_map_pairs(pred, gt, strict=True, log=logs.append)


def test_wrong_size_is_resized_with_note(tmp_path):
    pred, gt = _setup(tmp_path)
    Image.fromarray(_mask()).resize((16, 16), Image.NEAREST).save(pred / "In_1.png")
    logs = []
    res = sod_eval.evaluate_folders(pred, gt, log=logs.append)
    assert any("resized to their ground-truth size" in m and "In_1 16x16->32x32" in m for m in logs)
    assert res["inclusion"]["S"] > 0.9


def test_non_binary_ground_truth_note_and_strict(tmp_path):
    pred, gt = _setup(tmp_path)
    soft = _mask()
    soft[8, 10:24] = 100
    Image.fromarray(soft).save(gt / "Pa_1.png")
    logs = []
    load_map_pairs(pred, gt, log=logs.append)
    assert any("1 ground-truth mask(s) not binary (Pa_1.png); binarised at 128" in m for m in logs)
    (gt / "Sc_2.png").unlink()  # strict also refuses unmatched names; leave only the soft mask
    with pytest.raises(UserError, match="not binary"):
        load_map_pairs(pred, gt, strict=True, log=logs.append)


def test_empty_and_missing_folders(tmp_path):
    pred, gt = _setup(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no predicted map files"):
        load_map_pairs(tmp_path / "empty", gt)
    with pytest.raises(UserError, match="not found"):
        load_map_pairs(tmp_path / "nope", gt)
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(_mask()).save(other / "x.png")
    with pytest.raises(UserError, match="matches"):
        load_map_pairs(other, gt)


def test_sod_eval_cli(tmp_path, capsys):
    pred, gt = _setup(tmp_path)
    with pytest.raises(SystemExit) as code:
        run_cli(lambda: sod_eval.main(["--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "r")]))
    assert code.value.code == 0
    out = capsys.readouterr().out
    assert "overall" in out and (tmp_path / "r.md").is_file() and (tmp_path / "r.csv").is_file()
    csv = (tmp_path / "r.csv").read_text().splitlines()
    assert csv[0].startswith("category,n,S,MAE,E_max,F_max,IoU,Dice") and len(csv) == 5
    with pytest.raises(SystemExit) as code:
        run_cli(lambda: sod_eval.main(["--pred", str(tmp_path / "missing"), "--gt", str(gt)]))
    assert code.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1


def test_real_ground_truth_against_itself(saliency_root):
    from dataset.pairs import find_pairs

    pairs = find_pairs(saliency_root)[::45]  # 20 real masks, all categories
    stems = [p.stem for p in pairs]
    res = sod_eval.evaluate_folders(saliency_root / "Ground truth", saliency_root, stems=stems, log=lambda m: None)
    assert set(res) == {"inclusion", "patches", "scratches", "overall"}
    assert res["overall"]["n"] == 20
    assert res["overall"]["S"] == pytest.approx(1.0, abs=1e-9) and res["overall"]["MAE"] == 0.0
