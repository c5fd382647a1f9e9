"""evaluation.mask_adherence: in-mask vs ring contrast, and its real-vs-generated summary."""
import json

import numpy as np
import pytest
from PIL import Image

from evaluation import mask_adherence as ma
from runtime.errors import UserError


def write_pair(root, stem, image, mask):
    (root / "Source_Images").mkdir(parents=True, exist_ok=True)
    (root / "Ground_truth").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.astype(np.uint8)).save(root / "Source_Images" / f"{stem}.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(root / "Ground_truth" / f"{stem}.png")


def blob(size=64, lo=20, hi=40):
    m = np.zeros((size, size), bool)
    m[lo:hi, lo:hi] = True
    return m


def test_contrast_sees_a_dark_defect_and_ignores_an_absent_one():
    rng = np.random.default_rng(0)
    m = blob()
    background = 128 + rng.normal(0, 4, m.shape)
    dark = np.where(m, background - 40, background)
    c = ma.defect_contrast(dark, m)
    assert c.delta == pytest.approx(-40, abs=2) and c.cnr > 5
    assert ma.defect_contrast(background, m).cnr < 1        # nothing drawn in the mask
    shifted = np.where(np.roll(m, 15, axis=1), background - 40, background)
    assert ma.defect_contrast(shifted, m).cnr < c.cnr / 3   # drawn in the wrong place
    assert ma.defect_contrast(background, np.zeros_like(m)) is None
    with pytest.raises(UserError, match="differ in size"):
        ma.defect_contrast(background, m[:32])


def test_cli_compares_generated_with_real(tmp_path, capsys):
    rng = np.random.default_rng(1)
    real, gen = tmp_path / "real", tmp_path / "gen"
    for i, stem in enumerate(["In_1", "In_2", "In_3", "Sc_1", "Sc_2", "Sc_3"]):
        m = blob(lo=10 + 3 * i, hi=30 + 3 * i)
        bg = 128 + rng.normal(0, 3, m.shape)
        sign = -1 if stem.startswith("In") else 1
        write_pair(real, stem, np.where(m, bg + sign * (30 + 5 * i), bg), m)
        write_pair(gen, stem, np.where(m, bg + sign * (10 + 2 * i), bg), m)  # weaker, same sign
    out = tmp_path / "report.json"
    assert ma.main(["--generated", str(gen), "--real", str(real), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["all"]["pairs"] == 6 and report["all"]["sign_agreement"] == 1.0
    assert report["all"]["delta_correlation"] > 0.9
    assert report["inclusion"]["cnr_generated"] < report["inclusion"]["cnr_real"]
    assert "scratches" in capsys.readouterr().out


def test_size_mismatch_names_the_file(tmp_path):
    write_pair(tmp_path, "Pa_1", np.full((16, 16), 100), blob(size=32, lo=4, hi=12))
    with pytest.raises(UserError, match="Pa_1.png.*differ in size"):
        ma.folder_contrasts(tmp_path, None)


def test_folder_with_only_empty_masks_is_refused(tmp_path):
    write_pair(tmp_path, "In_1", np.full((16, 16), 100), np.zeros((16, 16), bool))
    with pytest.raises(UserError, match="no pair with a non-empty mask"):
        ma.folder_contrasts(tmp_path, None)


def test_real_masks_that_merely_share_names_are_refused_or_left_out(tmp_path, capsys):
    rng = np.random.default_rng(2)
    real, gen = tmp_path / "real", tmp_path / "gen"
    stems = ["In_1", "In_2", "In_3", "Sc_1"]
    for i, stem in enumerate(stems):
        bg = 128 + rng.normal(0, 3, (64, 64))
        write_pair(gen, stem, np.where(blob(), bg - 30, bg), blob())
        other = blob(lo=2, hi=12) if stem != "Sc_1" else blob()  # only Sc_1 is the same mask
        write_pair(real, stem, np.where(other, bg - 30, bg), other)
    report = tmp_path / "r.json"
    assert ma.main(["--generated", str(gen), "--real", str(real), "--out", str(report)]) == 0
    assert "3 of 4 real masks differ" in capsys.readouterr().err
    assert json.loads(report.read_text())["all"]["matched"] == 1
    write_pair(real, "Sc_1", np.full((64, 64), 128), blob(lo=40, hi=60))
    with pytest.raises(UserError, match="none of the 4 real masks"):
        ma.main(["--generated", str(gen), "--real", str(real)])
