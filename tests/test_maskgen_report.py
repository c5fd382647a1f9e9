"""maskgen post-processing and the mask-quality report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataset.categories import DEFAULT_CATEGORIES
from maskgen.data import load_masks
from maskgen.postprocess import binarize, nonempty_fallback, postprocess, remove_specks, resize_nearest
from maskgen.report import compare, mask_stats, run_report
from maskgen.report import main as report_main
from runtime.errors import UserError


def test_postprocess_threshold_resize_and_specks():
    soft = -np.ones((8, 8), np.float32)
    soft[1:5, 1:3] = 0.8          # 8-pixel blob: kept
    soft[7, 7] = 0.9              # 1-pixel speck: dropped
    soft[6, 0] = -0.2             # below threshold 0.5 on the [0, 1] scale
    assert binarize(soft, 0.5).sum() == 9
    out = postprocess(soft, 32, threshold=0.5, min_area=4 * 16 / 32 ** 2, upsample="nearest")  # 4 model pixels
    assert out.shape == (32, 32) and out.dtype == bool
    assert out.sum() == 8 * 16 and not out[28:, 28:].any()
    assert np.array_equal(resize_nearest(binarize(soft), 16)[::2, ::2], binarize(soft))
    m = np.zeros((10, 10), bool)
    m[0, 0] = True
    m[5:8, 5:8] = True
    assert remove_specks(m, 2).sum() == 9


def test_bilinear_decoding_and_hysteresis_bridge_a_faint_gap():
    from scipy import ndimage

    soft = -np.ones((16, 16), np.float32)
    soft[2:14, 7] = 0.6            # a one-pixel-wide line at 0.8 on the [0, 1] scale ...
    soft[8, 7] = -0.2              # ... with one faint pixel (0.4) in it
    split = postprocess(soft, 64, threshold=0.5, min_area=0.0)
    assert ndimage.label(split, structure=np.ones((3, 3)))[1] == 2
    bridged = postprocess(soft, 64, threshold=0.5, min_area=0.0, low_threshold=0.3)
    assert ndimage.label(bridged, structure=np.ones((3, 3)))[1] == 1
    assert bridged.sum() > split.sum() and not (split & ~bridged).any()
    # bilinear edges follow the soft values: no 4x4 blocks, and the line stays about 4 pixels wide
    assert 2 <= split[20].sum() <= 6 and postprocess(soft, 64, 0.5, 0.0, upsample="nearest")[20].sum() == 4
    # a faint blob that never reaches the threshold stays out, whatever the low level
    soft[:, :] = -1
    soft[3:6, 3:6] = -0.1
    assert not postprocess(soft, 64, threshold=0.5, min_area=0.0, low_threshold=0.3).any()


def test_fallback_is_never_empty():
    soft = -np.ones((8, 8), np.float32)
    soft[2, 3] = -0.9             # nothing passes the threshold: take the strongest blob
    out = nonempty_fallback(soft, 16)
    assert out.any() and out.shape == (16, 16)


def test_mask_stats_shapes():
    disk = np.hypot(*np.mgrid[-20:21, -20:21]) <= 15
    assert mask_stats(disk)["elongation"] == pytest.approx(1.0, abs=0.05)
    line = np.zeros((50, 50), bool)
    line[5:45, 10] = True
    assert mask_stats(line)["elongation"] == pytest.approx(40.0, rel=0.01)
    two = np.zeros((50, 50), bool)
    two[5:10, 5:10] = two[30:40, 30:32] = True
    s = mask_stats(two)
    assert s["components"] == 2 and s["area"] == pytest.approx(45 / 2500)
    assert np.isnan(mask_stats(np.zeros((4, 4), bool))["elongation"])


def _write(folder: Path, name: str, mask: np.ndarray) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255).save(folder / name)


def test_report_identical_sets_and_outputs(tmp_path):
    real, gen = tmp_path / "real", tmp_path / "gen"
    real.mkdir()
    gen.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        for prefix in ("In", "Sc"):
            m = np.zeros((40, 40), bool)
            y, x = rng.integers(0, 30, 2)
            m[y:y + 8, x:x + (2 if prefix == "Sc" else 6)] = True
            _write(real, f"{prefix}_{i + 1}.png", m)
            _write(gen, f"{prefix}_gen_{i + 1:04d}.png", m)
    rep = run_report(real, gen, tmp_path / "out", n_grid=4, fid="skip", log=lambda m: None)
    assert set(rep["categories"]) == {"inclusion", "scratches"}
    for s in rep["categories"].values():
        assert s["empty_generated"] == 0
        assert s["area"]["ks"] == 0 and s["components"]["ks"] == 0 and s["elongation"]["ks"] == 0
    assert rep["categories"]["scratches"]["elongation"]["real"]["median"] > \
        rep["categories"]["inclusion"]["elongation"]["real"]["median"]
    for f in ("report.json", "report.md", "grid.png", "distributions.png"):
        assert (tmp_path / "out" / f).is_file()
    assert json.loads((tmp_path / "out" / "report.json").read_text())["mask_fid"]["skipped"]
    # the CLI's KS gate
    assert report_main(["--real", str(real), "--generated", str(gen), "--out", str(tmp_path / "o2"),
                        "--no_fid", "--max_ks_area", "0.1"]) == 0


def test_report_bad_input(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no mask files"):
        run_report(empty, empty, tmp_path / "out", fid="skip")
    odd = tmp_path / "odd"
    odd.mkdir()
    _write(odd, "Xx_gen_0001.png", np.ones((8, 8), bool))
    with pytest.raises(UserError, match="unknown category prefix 'Xx'"):
        run_report(odd, odd, tmp_path / "out", fid="skip")


def test_real_masks_statistics(saliency_root):
    real = load_masks(saliency_root, DEFAULT_CATEGORIES)
    assert real.counts() == {"inclusion": 300, "patches": 300, "scratches": 300}
    res = compare(real, real)
    area = {k: v["summary"]["area"]["real"]["mean"] for k, v in res.items()}
    assert area["inclusion"] == pytest.approx(0.058, abs=1e-3)
    assert area["patches"] == pytest.approx(0.224, abs=1e-3)
    assert area["scratches"] == pytest.approx(0.070, abs=1e-3)
    elong = {k: v["summary"]["elongation"]["real"]["median"] for k, v in res.items()}
    assert elong["scratches"] > elong["inclusion"] > elong["patches"]


@pytest.mark.filterwarnings("error")
def test_report_with_all_black_generated_masks(tmp_path, capsys):
    real, gen = tmp_path / "real", tmp_path / "gen"
    real.mkdir()
    gen.mkdir()
    for i in range(3):
        m = np.zeros((16, 16), bool)
        m[2:8, 2 + i:8 + i] = True
        _write(real, f"In_{i + 1}.png", m)
        _write(gen, f"In_gen_{i + 1:04d}.png", np.zeros((16, 16), bool))
    assert report_main(["--real", str(real), "--generated", str(gen), "--out", str(tmp_path / "o"), "--no_fid"]) == 0
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert rep["categories"]["inclusion"]["empty_generated"] == 3
    assert (tmp_path / "o" / "distributions.png").is_file() and "inclusion" in capsys.readouterr().out
