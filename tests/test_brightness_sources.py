"""evaluation.realism.brightness_sources: the spread of generated brightness split into between-mask and
within-mask parts, and its correlation with the real images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluation.realism import brightness_sources as bs
from runtime.errors import UserError


def grey(path: Path, level: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), round(level * 255), np.uint8)).save(path)


def make(tmp_path: Path, gen_levels: dict[str, list[float]], real_levels: dict[str, float]) -> tuple[Path, Path]:
    for stem, level in real_levels.items():
        grey(tmp_path / "real" / "Source_Images" / f"{stem}.png", level)
    for stem, levels in gen_levels.items():
        for k, level in enumerate(levels):
            grey(tmp_path / "gen" / "Source_Images" / f"{stem}_s{k}.png", level)
    return tmp_path / "gen", tmp_path / "real"


def test_a_generator_that_copies_each_masks_brightness_has_no_within_mask_part(tmp_path):
    real = {"Pa_1": 0.2, "Pa_2": 0.5, "Pa_3": 0.8, "Pa_4": 0.4}
    gen, root = make(tmp_path, {s: [v, v, v] for s, v in real.items()}, real)
    d = bs.brightness_sources(gen, root)["patches"]
    assert d["masks"] == 4 and d["samples"] == 12
    assert d["within_sd"] < 0.003 and d["corr_with_real"] > 0.99
    assert d["between_sd"] == pytest.approx(d["real_sd"], abs=0.005)


def test_a_generator_whose_seed_sets_the_brightness_has_no_between_mask_part(tmp_path):
    real = {"Sc_1": 0.2, "Sc_2": 0.5, "Sc_3": 0.8}
    gen, root = make(tmp_path, {s: [0.3, 0.5, 0.7] for s in real}, real)
    d = bs.brightness_sources(gen, root)["scratches"]
    assert d["between_sd"] < 0.003 and d["within_sd"] == pytest.approx(0.2, abs=0.005)
    assert "| scratches | 3 x 3 |" in bs.table({"scratches": d})


def test_one_sample_per_mask_or_a_missing_real_image_is_one_line(tmp_path, capsys):
    gen, root = make(tmp_path, {"In_1": [0.5], "In_2": [0.4, 0.6]}, {"In_1": 0.5, "In_2": 0.5})
    with pytest.raises(UserError, match="at least two samples"):
        bs.brightness_sources(gen, root)
    gen, root = make(tmp_path / "b", {"In_7": [0.5, 0.6]}, {"In_1": 0.5})
    with pytest.raises(UserError, match="no real image for generated mask"):
        bs.brightness_sources(gen, root)
