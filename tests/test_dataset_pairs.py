"""find_pairs, read_image/read_mask and caption handling: real data and broken inputs."""
from __future__ import annotations

import json
import shutil
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataset import (
    DEFAULT_CATEGORIES,
    categories_from_config,
    category_for_file,
    find_pairs,
    load_captions,
    read_image,
    read_mask,
    write_procedural_dataset,
)
from dataset.pairs import natural_key
from runtime.errors import UserError


def one_line_error(exc: pytest.ExceptionInfo, *needles: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    return msg


@pytest.fixture()
def tiny_root(tmp_path: Path) -> Path:
    """A procedural 3x2-pair dataset in the SD-Saliency-900 layout."""
    root = tmp_path / "data"
    write_procedural_dataset(root, n_per_category=2, size=16, seed=1)
    return root


# ---------------------------------------------------------------- real data

def test_real_dataset_pairs(saliency_root: Path) -> None:
    pairs = find_pairs(saliency_root)
    assert len(pairs) == 900
    assert Counter(p.category.name for p in pairs) == {"inclusion": 300, "patches": 300,
                                                       "scratches": 300}
    stems = [p.stem for p in pairs]
    assert stems[:3] == ["In_1", "In_2", "In_3"]
    assert stems.index("In_2") < stems.index("In_10") < stems.index("In_100")
    assert stems[299:301] == ["In_300", "Pa_1"] and stems[-1] == "Sc_300"
    for pair in pairs:
        assert pair.image.stem == pair.mask.stem == pair.stem
        assert pair.category.prefix == pair.stem.split("_")[0]


def test_real_masks_are_binary(saliency_root: Path) -> None:
    areas: dict[str, list[float]] = {}
    for pair in find_pairs(saliency_root, check_sizes=False)[::3]:
        mask = read_mask(pair.mask, binarize="error")
        assert mask.dtype == bool and mask.shape == (200, 200)
        areas.setdefault(pair.category.name, []).append(float(mask.mean()))
    assert np.mean(areas["patches"]) > np.mean(areas["inclusion"])
    image = read_image(find_pairs(saliency_root, check_sizes=False)[0].image)
    assert image.mode == "RGB" and image.size == (200, 200)


# ---------------------------------------------------------------- layout

def test_natural_key_orders_numbers() -> None:
    names = ["In_10", "In_2", "Pa_1", "In_1", "In_100"]
    assert sorted(names, key=natural_key) == ["In_1", "In_2", "In_10", "In_100", "Pa_1"]


def test_both_folder_spellings(tiny_root: Path) -> None:
    underscored = find_pairs(tiny_root)
    assert [p.stem for p in underscored] == ["In_1", "In_2", "Pa_1", "Pa_2", "Sc_1", "Sc_2"]
    (tiny_root / "Source_Images").rename(tiny_root / "Source Images")
    (tiny_root / "Ground_truth").rename(tiny_root / "Ground truth")
    spaced = find_pairs(tiny_root)
    assert [p.stem for p in spaced] == [p.stem for p in underscored]
    assert spaced[0].image.parent.name == "Source Images"


def test_both_spellings_present_is_an_error(tiny_root: Path) -> None:
    (tiny_root / "Source Images").mkdir()
    with pytest.raises(UserError) as exc:
        find_pairs(tiny_root)
    one_line_error(exc, "Source Images", "Source_Images")


def test_image_without_mask(tiny_root: Path) -> None:
    (tiny_root / "Ground_truth" / "Pa_2.png").unlink()
    with pytest.raises(UserError) as exc:
        find_pairs(tiny_root)
    one_line_error(exc, "Pa_2", "without a mask")


def test_mask_without_image(tiny_root: Path) -> None:
    (tiny_root / "Source_Images" / "Sc_1.png").unlink()
    with pytest.raises(UserError) as exc:
        find_pairs(tiny_root)
    one_line_error(exc, "Sc_1", "without an image")


def test_size_mismatch(tiny_root: Path) -> None:
    Image.new("L", (20, 16)).save(tiny_root / "Ground_truth" / "In_2.png")
    with pytest.raises(UserError) as exc:
        find_pairs(tiny_root)
    one_line_error(exc, "In_2", "16x16", "20x16")


def test_unknown_prefix(tiny_root: Path) -> None:
    for folder in ("Source_Images", "Ground_truth"):
        Image.new("L", (16, 16)).save(tiny_root / folder / "Xy_1.png")
    with pytest.raises(UserError) as exc:
        find_pairs(tiny_root)
    one_line_error(exc, "Xy_1", "In, Pa, Sc")


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(UserError) as exc:
        find_pairs(tmp_path / "nowhere")
    one_line_error(exc, "nowhere")
    with pytest.raises(UserError) as exc:
        find_pairs(tmp_path)
    one_line_error(exc, "Source Images")
    (tmp_path / "Source_Images").mkdir()
    (tmp_path / "Ground_truth").mkdir()
    with pytest.raises(UserError) as exc:
        find_pairs(tmp_path)
    one_line_error(exc, "Source_Images", "no image files")


def test_non_image_files_are_skipped_with_warning(tiny_root: Path) -> None:
    (tiny_root / "Source_Images" / "notes.txt").write_text("hello")
    (tiny_root / "Source_Images" / ".DS_Store").write_text("")
    with pytest.warns(UserWarning, match="notes.txt"):
        pairs = find_pairs(tiny_root)
    assert len(pairs) == 6


def test_bmp_and_jpg_images_are_found(tiny_root: Path) -> None:
    img_dir = tiny_root / "Source_Images"
    Image.open(img_dir / "In_1.png").save(img_dir / "In_1.bmp")
    (img_dir / "In_1.png").unlink()
    Image.open(img_dir / "Pa_1.png").convert("RGB").save(img_dir / "Pa_1.jpeg")
    (img_dir / "Pa_1.png").unlink()
    pairs = {p.stem: p for p in find_pairs(tiny_root)}
    assert pairs["In_1"].image.suffix == ".bmp" and pairs["Pa_1"].image.suffix == ".jpeg"


def test_duplicate_stem(tiny_root: Path) -> None:
    img_dir = tiny_root / "Source_Images"
    Image.open(img_dir / "In_1.png").save(img_dir / "In_1.bmp")
    with pytest.raises(UserError) as exc:
        find_pairs(tiny_root)
    one_line_error(exc, "In_1.bmp", "In_1.png")


# ---------------------------------------------------------------- masks and images

def _save(arr: np.ndarray, path: Path) -> Path:
    Image.fromarray(arr).save(path)
    return path


def test_mask_value_policy(tmp_path: Path) -> None:
    base = np.zeros((8, 8), np.uint8)
    base[2:5, 3:6] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m01 = read_mask(_save(base, tmp_path / "m01.png"), binarize="error")
        m255 = read_mask(_save(base * 255, tmp_path / "m255.png"), binarize="error")
        empty = read_mask(_save(base * 0, tmp_path / "empty.png"), binarize="error")
    assert m01.dtype == bool and m01.sum() == 9 and np.array_equal(m01, m255)
    assert not empty.any()
    soft = base * 200
    soft[0, 0] = 100
    soft_path = _save(soft, tmp_path / "soft.png")
    with pytest.warns(UserWarning, match="soft.png"):
        got = read_mask(soft_path)
    assert got.sum() == 9 and not got[0, 0]
    with pytest.raises(UserError) as exc:
        read_mask(soft_path, binarize="error")
    one_line_error(exc, "soft.png", "not binary")


def test_rgb_masks(tmp_path: Path) -> None:
    grey = np.zeros((6, 6), np.uint8)
    grey[1:3, 1:4] = 255
    same = read_mask(_save(np.stack([grey] * 3, -1), tmp_path / "same.png"), binarize="error")
    assert same.sum() == 6
    colour = np.stack([grey, grey, grey], -1)
    colour[0, 0] = (255, 0, 0)
    with pytest.raises(UserError) as exc:
        read_mask(_save(colour, tmp_path / "colour.png"))
    one_line_error(exc, "colour.png", "R/G/B")


def test_mask_mismatch_inside_pairs_dataset(tiny_root: Path) -> None:
    arr = np.zeros((16, 16, 3), np.uint8)
    arr[2:6, 2:6, 0] = 255
    _save(arr, tiny_root / "Ground_truth" / "Pa_1.png")
    pair = next(p for p in find_pairs(tiny_root) if p.stem == "Pa_1")
    with pytest.raises(UserError) as exc:
        read_mask(pair.mask)
    one_line_error(exc, "Pa_1.png")


def test_corrupt_files(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    for reader in (read_image, read_mask):
        with pytest.raises(UserError) as exc:
            reader(bad)
        one_line_error(exc, "broken.png")
    with pytest.raises(UserError) as exc:
        read_image(tmp_path / "missing.bmp")
    one_line_error(exc, "missing.bmp", "not found")


def test_grayscale_image_becomes_rgb(tmp_path: Path) -> None:
    path = _save(np.arange(64, dtype=np.uint8).reshape(8, 8), tmp_path / "g.bmp")
    img = read_image(path)
    arr = np.asarray(img)
    assert img.mode == "RGB" and arr.shape == (8, 8, 3) and arr[7, 7, 2] == 63


# ---------------------------------------------------------------- captions

def test_caption_json_decides_category(tiny_root: Path) -> None:
    captions = [{"In_1.png": "A photo of scratches"}, {"Pa_1.png": "a photo of PATCHES"}]
    (tiny_root / "caption.json").write_text(json.dumps(captions))
    pairs = {p.stem: p.category.name for p in find_pairs(tiny_root)}
    assert pairs["In_1"] == "scratches"      # caption wins over the prefix
    assert pairs["Pa_1"] == "patches"
    assert pairs["In_2"] == "inclusion"      # not listed: prefix


def test_malformed_caption_json(tiny_root: Path) -> None:
    (tiny_root / "caption.json").write_text('{"In_1.png": "A photo of inclusion",')
    with pytest.raises(UserError) as exc:
        find_pairs(tiny_root)
    one_line_error(exc, "caption.json", "malformed")
    (tiny_root / "caption.json").write_text('{"In_1.png": 3}')
    with pytest.raises(UserError) as exc:
        find_pairs(tiny_root)
    one_line_error(exc, "caption.json", "In_1.png")


def test_caption_without_category(tiny_root: Path) -> None:
    (tiny_root / "caption.json").write_text(json.dumps({"In_1.png": "A photo of rust"}))
    with pytest.raises(UserError) as exc:
        find_pairs(tiny_root)
    one_line_error(exc, "In_1.png", "rust")


def test_load_captions_both_formats(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"In_1.bmp": "x"}))
    (tmp_path / "b.json").write_text(json.dumps([{"In_1.bmp": "x"}, {"In_2.bmp": "y"}]))
    assert load_captions(tmp_path / "a.json") == {"In_1.bmp": "x"}
    assert load_captions(tmp_path / "b.json") == {"In_1.bmp": "x", "In_2.bmp": "y"}
    (tmp_path / "c.json").write_text(json.dumps([1, 2]))
    with pytest.raises(UserError) as exc:
        load_captions(tmp_path / "c.json")
    one_line_error(exc, "c.json")


# ---------------------------------------------------------------- categories

def test_category_for_file() -> None:
    cats = list(DEFAULT_CATEGORIES)
    assert category_for_file("In_12.bmp", cats).name == "inclusion"
    assert category_for_file("/x/y/sc_3.png", cats).name == "scratches"
    caps = {"Pa_1.bmp": "A photo of inclusion", "Sc_9.png": "  SCRATCHES on steel"}
    assert category_for_file("Pa_1.bmp", cats, caps).name == "inclusion"
    assert category_for_file("Pa_1.png", cats, caps).name == "inclusion"   # stem match
    assert category_for_file("Sc_9.png", cats, caps).name == "scratches"
    with pytest.raises(UserError) as exc:
        category_for_file("Zz_1.bmp", cats)
    one_line_error(exc, "Zz_1.bmp", "In, Pa, Sc")
    with pytest.raises(UserError) as exc:
        category_for_file("noprefix.bmp", cats)
    one_line_error(exc, "noprefix.bmp")
    with pytest.raises(UserError) as exc:
        category_for_file("In_1.bmp", cats, {"In_1.bmp": "patches and scratches"})
    one_line_error(exc, "ambiguous")


def test_categories_from_config() -> None:
    from omegaconf import OmegaConf

    assert categories_from_config(None) == list(DEFAULT_CATEGORIES)
    assert [c.prompt for c in DEFAULT_CATEGORIES] == ["inclusion", "patches", "scratches"]
    assert [(c.prefix, c.index) for c in DEFAULT_CATEGORIES] == [("In", 1), ("Pa", 2), ("Sc", 3)]
    cfg = OmegaConf.create([{"name": "crack", "prefix": "Cr", "index": 4, "prompt": "a crack"},
                            {"name": "pit", "prefix": "Pt", "index": 1}])
    cats = categories_from_config(cfg)
    assert cats[0].prompt == "a crack" and cats[1].prompt == "pit"
    assert categories_from_config({"categories": cfg}) == cats
    bad_lists = [
        [{"name": "a", "prefix": "A", "index": 1}, {"name": "b", "prefix": "A", "index": 2}],
        [{"name": "a", "prefix": "A", "index": 1}, {"name": "b", "prefix": "B", "index": 1}],
        [{"name": "a", "prefix": "A", "index": 0}],
        [{"name": "a", "prefix": "A"}],
        [{"name": "a", "prefix": "A_B", "index": 1}],
        [{"name": "a", "prefix": "A", "index": 1, "colour": "red"}],
        [],
    ]
    for bad in bad_lists:
        with pytest.raises(UserError) as exc:
            categories_from_config(bad)
        one_line_error(exc)


def test_custom_categories_in_find_pairs(tiny_root: Path) -> None:
    shutil.copy(tiny_root / "Source_Images" / "In_1.png", tiny_root / "Source_Images" / "Cr_1.png")
    shutil.copy(tiny_root / "Ground_truth" / "In_1.png", tiny_root / "Ground_truth" / "Cr_1.png")
    cfg = [dict(name=c.name, prefix=c.prefix, index=c.index, prompt=c.prompt)
           for c in DEFAULT_CATEGORIES] + [{"name": "crack", "prefix": "Cr", "index": 7}]
    pairs = find_pairs(tiny_root, cfg)
    assert pairs[0].stem == "Cr_1" and pairs[0].category.index == 7


# ---------------------------------------------------------------- atomic writes

def test_atomic_writers(tmp_path: Path) -> None:
    from dataset import write_json_atomic, write_png_atomic

    img = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8))
    out = write_png_atomic(img, tmp_path / "a.png")
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(img))
    write_png_atomic(Image.new("L", (2, 2)), out)                  # replaces in place
    assert Image.open(out).size == (2, 2)
    write_json_atomic({"k": [1, "é"]}, tmp_path / "b.json")
    assert json.loads((tmp_path / "b.json").read_text(encoding="utf-8")) == {"k": [1, "é"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.json"]
    with pytest.raises(UserError) as exc:
        write_png_atomic(img, tmp_path / "no" / "c.png")
    one_line_error(exc, "c.png")


def test_the_folder_names_are_spelled_in_one_module():
    """``Source_Images`` / ``Ground_truth`` (and the spaced spellings) stand as names in dataset/files.py alone;
    every other module takes them from there (help texts and messages may mention them)."""
    import ast

    from dataset.files import IMAGE_DIRS, MASK_DIRS

    repo = Path(__file__).resolve().parents[1]
    names, skip = set(IMAGE_DIRS + MASK_DIRS), {".venv", "tests", "OUTPUT", "DATA", "models", "docs", ".git"}
    spelled = sorted(
        f"{path.relative_to(repo)}:{node.lineno}"
        for path in repo.rglob("*.py") if not skip & set(path.relative_to(repo).parts[:1])
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and node.value in names)
    assert spelled and all(s.startswith("dataset/files.py:") for s in spelled), spelled
