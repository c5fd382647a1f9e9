"""Procedural steel-defect generator: determinism, shapes, on-disk layout, dataset items."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dataset import (
    ProceduralDefectDataset,
    SemanticMaskDataset,
    find_pairs,
    generate_pair,
    read_image,
    read_mask,
    write_procedural_dataset,
)
from dataset.sem_dataset import image_to_tensor
from runtime.errors import UserError

CATS = ("inclusion", "patches", "scratches")


def shape_stats(mask: np.ndarray) -> tuple[float, float]:
    """(elongation = sqrt of principal-axis variance ratio, area fraction)."""
    ys, xs = np.nonzero(mask)
    evals = np.linalg.eigvalsh(np.cov(np.stack([xs, ys]).astype(float)))
    return float(np.sqrt(evals[1] / max(evals[0], 1e-3))), float(mask.mean())


def ring(mask: np.ndarray, width: int = 3) -> np.ndarray:
    """Background pixels within ``width`` steps (4-neighbourhood) of the mask."""
    grown = mask.copy()
    for _ in range(width):
        step = grown.copy()
        step[1:] |= grown[:-1]
        step[:-1] |= grown[1:]
        step[:, 1:] |= grown[:, :-1]
        step[:, :-1] |= grown[:, 1:]
        grown = step
    return grown & ~mask


def test_deterministic_by_seed() -> None:
    for cat in CATS:
        img_a, mask_a = generate_pair(cat, 48, seed=11)
        img_b, mask_b = generate_pair(cat, 48, seed=11)
        img_c, mask_c = generate_pair(cat, 48, seed=12)
        assert img_a.mode == "L" and img_a.size == (48, 48)
        assert mask_a.dtype == bool and mask_a.shape == (48, 48)
        assert np.array_equal(np.asarray(img_a), np.asarray(img_b))
        assert np.array_equal(mask_a, mask_b)
        assert not np.array_equal(mask_a, mask_c)
    inc, _ = generate_pair("inclusion", 32, seed=3)
    pat, _ = generate_pair("patches", 32, seed=3)
    assert not np.array_equal(np.asarray(inc), np.asarray(pat))


def test_masks_non_empty_and_defects_visible() -> None:
    for cat in CATS:
        for seed in range(40):
            img, mask = generate_pair(cat, 64, seed)
            arr = np.asarray(img, dtype=float)
            assert 2 <= mask.sum() < mask.size
            near = ring(mask)
            level = arr[near].mean()
            contrast = np.abs(arr[mask] - level).mean() - np.abs(arr[near] - level).mean()
            assert contrast > 8.0, (cat, seed)


def test_categories_differ_in_shape() -> None:
    stats = {cat: np.array([shape_stats(generate_pair(cat, 64, s)[1]) for s in range(40)])
             for cat in CATS}
    elong = {c: np.median(v[:, 0]) for c, v in stats.items()}
    area = {c: np.median(v[:, 1]) for c, v in stats.items()}
    assert elong["scratches"] > 8.0 and elong["scratches"] > 2.5 * elong["inclusion"]
    assert elong["scratches"] > 4.0 * elong["patches"]
    assert area["patches"] > 0.1 and area["patches"] > 3.0 * max(area["inclusion"],
                                                                   area["scratches"])
    assert area["inclusion"] < 0.06


def test_vertical_orientation_transposes() -> None:
    img_h, mask_h = generate_pair("scratches", 32, 4)
    img_v, mask_v = generate_pair("scratches", 32, 4, orientation="vertical")
    assert np.array_equal(np.asarray(img_h).T, np.asarray(img_v)) and np.array_equal(mask_h.T, mask_v)


def test_bad_generator_arguments() -> None:
    for args in (("rust", 32, 0), ("inclusion", 4, 0), ("inclusion", 32, -1)):
        with pytest.raises(UserError) as exc:
            generate_pair(*args)
        assert "\n" not in str(exc.value)
    assert generate_pair("Sc", 16, 0)[1].any()            # prefixes are accepted too


def test_written_dataset_matches_on_the_fly_dataset(tmp_path: Path) -> None:
    pairs = write_procedural_dataset(tmp_path / "d", n_per_category=3, size=32, seed=7)
    assert [p.stem for p in pairs] == ["In_1", "In_2", "In_3", "Pa_1", "Pa_2", "Pa_3",
                                       "Sc_1", "Sc_2", "Sc_3"]
    assert pairs == find_pairs(tmp_path / "d")
    live = ProceduralDefectDataset(3, image_size=32, seed=7)
    assert len(live) == 9
    by_name = {live[i]["name"]: live[i] for i in range(len(live))}
    for pair in pairs:
        item = by_name[pair.stem]
        assert item["category"] == pair.category.index
        assert torch.equal(item["image"], image_to_tensor(read_image(pair.image)))
        assert torch.equal(item["sem"][pair.category.index].bool(),
                           torch.from_numpy(read_mask(pair.mask, binarize="error")))


def test_dataset_items_like_semantic_dataset(tmp_path: Path) -> None:
    write_procedural_dataset(tmp_path / "d", n_per_category=1, size=16, seed=0)
    real = SemanticMaskDataset(tmp_path / "d", image_size=16, in_dim=10, random_flip=False)[0]
    live = ProceduralDefectDataset(2, image_size=16, in_dim=10)
    item = live[4]
    assert set(item) == set(real)
    assert item["name"] == "Pa_2" and item["category"] == 2 and item["caption"] == "patches"
    assert item["image"].shape == (3, 16, 16) and -1 <= item["image"].min() <= item["image"].max() <= 1
    assert item["sem"].shape == (10, 16, 16) and torch.equal(item["sem"].sum(0), torch.ones(16, 16))
    assert torch.equal(live[4]["image"], item["image"])    # deterministic per index
    assert not torch.equal(live[1]["image"], item["image"])
    with pytest.raises(IndexError):
        live[6]


def test_writer_refuses_non_empty_folder(tmp_path: Path) -> None:
    write_procedural_dataset(tmp_path / "d", n_per_category=1, size=16)
    with pytest.raises(UserError) as exc:
        write_procedural_dataset(tmp_path / "d", n_per_category=1, size=16)
    assert "overwrite" in str(exc.value)
    pairs = write_procedural_dataset(tmp_path / "d", n_per_category=2, size=16, overwrite=True)
    assert len(pairs) == 6
    with pytest.raises(UserError):
        ProceduralDefectDataset(2, categories=[{"name": "rust", "prefix": "Ru", "index": 1}])
