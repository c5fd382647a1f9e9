"""The one lister of image and mask files (dataset.files.list_by_stem): what its strict and lax modes share and
where they differ, and the callers that use each mode."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from PIL import Image

import dataset.folders
import dataset.pairs
import evaluation.mask_adherence
import maskgen.data
from dataset.files import IMAGE_EXTS, MASK_EXTS, list_by_stem
from runtime.errors import UserError


def _mask(path: Path) -> Path:
    Image.new("L", (4, 4), 255).save(path)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three masks, a dotfile, caption.json, a stray text file, a sub-folder and a JPEG mask."""
    for name in ("In_10.png", "In_2.png", "Pa_1.bmp"):
        _mask(tmp_path / name)
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "caption.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    Image.new("L", (4, 4), 255).save(tmp_path / "Sc_3.jpg")
    return tmp_path


def test_lax_skips_what_is_not_listed_silently(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        files = list_by_stem(folder, MASK_EXTS, "mask", strict=False)
    assert list(files) == ["In_2", "In_10", "Pa_1"]  # natural order of the stems
    assert files["Pa_1"] == folder / "Pa_1.bmp"


def test_strict_refuses_a_jpeg_mask_and_warns_about_the_rest(folder):
    with pytest.raises(UserError, match=r"Sc_3\.jpg: JPEG masks are lossy"):
        list_by_stem(folder, MASK_EXTS, "mask", strict=True)
    (folder / "Sc_3.jpg").unlink()
    with pytest.warns(UserWarning, match=r"skipping 2 non-mask entries .*notes\.txt, sub/") as seen:
        files = list_by_stem(folder, MASK_EXTS, "mask", strict=True)
    assert list(files) == ["In_2", "In_10", "Pa_1"] and len(seen) == 1
    assert "DS_Store" not in str(seen[0].message) and "caption" not in str(seen[0].message)


def test_a_dangling_link_is_refused_by_strict_and_by_lax_when_it_is_listed(tmp_path):
    _mask(tmp_path / "In_1.png")
    os.symlink(tmp_path / "gone.txt", tmp_path / "stray.txt")
    assert list(list_by_stem(tmp_path, MASK_EXTS, "mask", strict=False)) == ["In_1"]
    with pytest.raises(UserError, match=r"stray\.txt: broken or looping symbolic link in the mask folder"):
        list_by_stem(tmp_path, MASK_EXTS, "mask", strict=True)
    (tmp_path / "stray.txt").unlink()
    os.symlink(tmp_path / "gone.png", tmp_path / "In_2.png")
    for strict in (True, False):
        with pytest.raises(UserError, match=r"In_2\.png: broken or looping symbolic link"):
            list_by_stem(tmp_path, MASK_EXTS, "mask", strict=strict)


@pytest.mark.parametrize("strict", [True, False])
def test_both_modes_refuse_the_same_things_in_one_line_naming_the_folder(tmp_path, strict):
    with pytest.raises(UserError, match=rf"^{tmp_path / 'nowhere'}: image folder not found; check --x$"):
        list_by_stem(tmp_path / "nowhere", IMAGE_EXTS, "image", strict=strict, flag="--x")
    file = _mask(tmp_path / "a.png")
    with pytest.raises(UserError, match="image folder is a file, not a folder"):
        list_by_stem(file, IMAGE_EXTS, "image", strict=strict)
    _mask(tmp_path / "a.bmp")
    with pytest.raises(UserError, match=rf"^{tmp_path}: a.png and a.bmp have the same name 'a'|a.bmp and a.png"):
        list_by_stem(tmp_path, IMAGE_EXTS, "image", strict=strict)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".hidden.png").write_bytes(b"")
    with pytest.raises(UserError) as err:
        list_by_stem(empty, IMAGE_EXTS, "image", strict=strict)
    assert str(err.value).startswith(f"{empty}: no image files (") and "\n" not in str(err.value)


def test_strict_is_an_explicit_choice():
    with pytest.raises(TypeError, match="strict"):
        list_by_stem(".", IMAGE_EXTS, "image")  # type: ignore[call-arg]


def test_the_other_listers_are_calls_to_it(folder, tmp_path):
    """No second implementation: the evaluation folders and the mask producer list through dataset.files."""
    assert not hasattr(maskgen.data, "list_masks")
    assert dataset.folders.list_by_stem is list_by_stem and evaluation.mask_adherence.list_by_stem is list_by_stem
    (folder / "Sc_3.jpg").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [p.name for p in maskgen.data.find_mask_files(folder)] == ["In_2.png", "In_10.png", "Pa_1.bmp"]
    root = tmp_path / "root"
    (root / "Ground truth").mkdir(parents=True)
    with pytest.raises(UserError, match=r"Ground truth: no mask files \(.*\); check the path \(a folder of masks"):
        maskgen.data.find_mask_files(root)


@pytest.mark.parametrize("finder, what, spellings, required", [
    (dataset.pairs.image_dir, "image", ("Source_Images", "Source Images"), True),
    (dataset.folders.image_folder, "image", ("Source_Images", "Source Images"), False),
    (dataset.folders.mask_folder, "mask", ("Ground truth", "Ground_truth"), False),
    (maskgen.data.mask_dir, "mask", ("Ground truth", "Ground_truth"), False),
])
def test_one_subfolder_finder(tmp_path, finder, what, spellings, required):
    """A dataset root's image or mask folder, in either spelling; both spellings at once is refused everywhere;
    a plain folder of files is its own folder where a subfolder is optional."""
    if required:
        with pytest.raises(UserError, match=f"no {what} folder; expected one named"):
            finder(tmp_path)
    else:
        assert finder(tmp_path) == tmp_path
    (tmp_path / spellings[0]).mkdir()
    assert finder(tmp_path) == tmp_path / spellings[0]
    (tmp_path / spellings[1]).mkdir()
    with pytest.raises(UserError, match=f"both .* exist; keep only one {what} folder"):
        finder(tmp_path)
