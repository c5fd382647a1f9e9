"""Sample filter: keeps exactly the pairs whose IoU reaches the threshold (constructed inputs)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from evaluation.sample_filter import filter_samples
from runtime.errors import UserError

#: columns of the predicted rectangle -> IoU with the 10-column mask = k / 10
COLUMNS = {"In_1": 10, "In_2": 8, "Pa_1": 6, "Pa_2": 5, "Sc_1": 3, "Sc_2": 0}


def _generated(tmp_path):
    root = tmp_path / "gen"
    (root / "Source_Images").mkdir(parents=True)
    (root / "Ground_truth").mkdir()
    preds = {}
    for stem, k in COLUMNS.items():
        mask = np.zeros((20, 20), np.uint8)
        mask[5:15, 5:15] = 255
        Image.fromarray(mask).save(root / "Ground_truth" / f"{stem}.png")
        Image.fromarray(np.full((20, 20), 128, np.uint8)).save(root / "Source_Images" / f"{stem}.png")
        pred = np.zeros((20, 20), np.float32)
        pred[5:15, 5:5 + k] = 0.9
        preds[f"{stem}.png"] = pred
    (root / "generation.json").write_text(json.dumps({"settings": {}}))
    return root, preds


def fake_predictor(preds):
    def predict(paths):
        return [preds[p.name] for p in paths]
    return predict


@pytest.mark.parametrize("threshold,kept", [(0.6, ["In_1", "In_2", "Pa_1"]), (0.8, ["In_1", "In_2"]),
                                            (0.0, list(COLUMNS))])
def test_filter_keeps_exactly_pairs_at_or_above_threshold(tmp_path, threshold, kept):
    root, preds = _generated(tmp_path)
    out = tmp_path / "kept"
    summary = filter_samples(root, out, fake_predictor(preds), threshold=threshold, log=lambda m: None)
    assert sorted(p.stem for p in (out / "Source_Images").iterdir()) == sorted(kept)
    assert sorted(p.stem for p in (out / "Ground_truth").iterdir()) == sorted(kept)
    assert summary["kept"] == len(kept) and summary["total"] == len(COLUMNS)
    rows = list(csv.DictReader((out / "filter_iou.csv").open()))
    assert [r["stem"] for r in rows] == list(COLUMNS)
    for r in rows:
        assert float(r["iou"]) == pytest.approx(COLUMNS[r["stem"]] / 10)
        assert (r["kept"] == "True") == (r["stem"] in kept)
    assert (out / "generation.json").is_file() and (out / "filter.json").is_file()


def test_filter_output_is_a_paired_dataset(tmp_path):
    from dataset.pairs import find_pairs

    root, preds = _generated(tmp_path)
    filter_samples(root, tmp_path / "kept", fake_predictor(preds), log=lambda m: None)
    assert [p.stem for p in find_pairs(tmp_path / "kept")] == ["In_1", "In_2", "Pa_1"]


def test_filter_refuses_non_empty_output_and_bad_threshold(tmp_path):
    root, preds = _generated(tmp_path)
    filter_samples(root, tmp_path / "kept", fake_predictor(preds), log=lambda m: None)
    with pytest.raises(UserError, match="not empty"):
        filter_samples(root, tmp_path / "kept", fake_predictor(preds), log=lambda m: None)
    with pytest.raises(UserError, match="must lie in"):
        filter_samples(root, tmp_path / "k2", fake_predictor(preds), threshold=1.5)


def test_overwrite_with_a_stricter_threshold_removes_pairs_no_longer_kept(tmp_path):
    root, preds = _generated(tmp_path)
    out = tmp_path / "kept"
    filter_samples(root, out, fake_predictor(preds), threshold=0.0, log=lambda m: None)
    summary = filter_samples(root, out, fake_predictor(preds), threshold=0.95, overwrite=True, log=lambda m: None)
    assert summary["kept"] == 1
    for sub in ("Source_Images", "Ground_truth"):
        assert sorted(p.stem for p in (out / sub).iterdir()) == ["In_1"]
    (out / "Source_Images" / "mine.png").write_bytes(b"x")  # not written by the filter: never deleted
    with pytest.raises(UserError, match="did not write"):
        filter_samples(root, out, fake_predictor(preds), threshold=0.0, overwrite=True, log=lambda m: None)
    assert (out / "Source_Images" / "mine.png").is_file()
