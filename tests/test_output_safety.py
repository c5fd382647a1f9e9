"""Outputs a command owns: rebuilt whole (stale files removed or refused, every generation.json lists exactly
the pairs of its folder), never written through a symbolic link planted in the output folder."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from test_eval_filter import _generated, fake_predictor

from evaluation.sample_filter import filter_samples
from runtime.atomic import copy_atomic, write_text_atomic
from runtime.errors import UserError


def test_a_planted_symlink_is_replaced_not_written_through(tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"precious")
    root, preds = _generated(tmp_path)
    out = tmp_path / "kept"
    filter_samples(root, out, fake_predictor(preds), threshold=0.6, log=lambda m: None)
    planted = out / "Source_Images" / "In_1.png"
    planted.unlink()
    planted.symlink_to(outside)  # a file of the output folder replaced by a link to a file outside
    filter_samples(root, out, fake_predictor(preds), threshold=0.6, overwrite=True, log=lambda m: None)
    assert outside.read_bytes() == b"precious"
    assert not planted.is_symlink() and planted.read_bytes() == (root / "Source_Images" / "In_1.png").read_bytes()

    link = tmp_path / "link.txt"
    link.symlink_to(outside)
    write_text_atomic("new", link)
    copy_atomic(root / "Ground_truth" / "In_1.png", link)
    assert outside.read_bytes() == b"precious" and not link.is_symlink()


def test_a_linked_output_subfolder_is_refused(tmp_path):
    root, preds = _generated(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "Source_Images").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UserError, match="not a folder of this output"):
        filter_samples(root, tmp_path / "kept", fake_predictor(preds), overwrite=True, log=lambda m: None)
    assert not any(elsewhere.iterdir())


def test_the_kept_folders_records_list_exactly_its_pairs(tmp_path):
    root, preds = _generated(tmp_path)
    stems = [name[:-4] for name in preds]
    (root / "generation.json").write_text(json.dumps(
        {"settings": {"seed": 0}, "images": {stem: {"seed": i} for i, stem in enumerate(stems)}}))
    prompts = {"In": "inclusion", "Pa": "patches", "Sc": "scratches"}
    (root / "caption.json").write_text(json.dumps({f"{s}.png": f"A photo of {prompts[s[:2]]}" for s in stems}))
    out = tmp_path / "kept"
    for threshold in (0.0, 0.6):  # a second, stricter run drops pairs: its records drop them too
        filter_samples(root, out, fake_predictor(preds), threshold=threshold, overwrite=True, log=lambda m: None)
        on_disk = sorted(p.stem for p in (out / "Source_Images").iterdir())
        record = json.loads((out / "generation.json").read_text())
        assert sorted(record["images"]) == on_disk and record["settings"] == {"seed": 0}
        assert sorted(json.loads((out / "caption.json").read_text())) == [f"{s}.png" for s in on_disk]
    assert on_disk == ["In_1", "In_2", "Pa_1"]


def test_predictions_into_a_folder_with_foreign_maps_are_refused(tmp_path):
    from evaluation.detector.predict import write_maps

    class Fixed:
        def predict_paths(self, paths, progress):
            for p in paths:
                yield p, np.zeros((4, 4), np.float32)

    images = [tmp_path / "In_1.png", tmp_path / "In_2.png"]
    maps = tmp_path / "maps"
    write_maps(Fixed(), images, maps, progress=False, log=lambda m: None)
    write_maps(Fixed(), images, maps, progress=False, log=lambda m: None)  # the same run again: fine
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(maps / "Old_9.png")
    with pytest.raises(UserError, match=r"holds 1 map\(s\) this run does not write \(Old_9.png\)"):
        write_maps(Fixed(), images, maps, progress=False, log=lambda m: None)


def test_a_filter_stopped_while_copying_is_rebuilt_by_the_same_command(tmp_path, monkeypatch):
    """A full disk after the first copy: once space is freed the same call (no overwrite) rebuilds the kept
    folder whole; a finished folder still needs overwrite."""
    import errno
    import os

    from evaluation import sample_filter

    root, preds = _generated(tmp_path)
    out = tmp_path / "kept"
    real, calls = sample_filter.copy_atomic, []

    def fills_up(src, dst):
        calls.append(dst)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst)
    monkeypatch.setattr(sample_filter, "copy_atomic", fills_up)
    with pytest.raises(OSError, match="No space left"):
        filter_samples(root, out, fake_predictor(preds), threshold=0.0, log=lambda m: None)
    assert not (out / "filter.json").exists()
    monkeypatch.setattr(sample_filter, "copy_atomic", real)
    summary = filter_samples(root, out, fake_predictor(preds), threshold=0.0, log=lambda m: None)
    assert summary["kept"] == len(preds) == len(list((out / "Source_Images").iterdir()))
    assert (out / "filter.json").is_file() and not (out / sample_filter.UNFINISHED).exists()
    with pytest.raises(UserError, match="not empty"):
        filter_samples(root, out, fake_predictor(preds), threshold=0.0, log=lambda m: None)
