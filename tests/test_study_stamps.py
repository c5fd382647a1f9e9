"""Study stamps name paths inside the repository relative to it, so a study folder moved to another checkout
(modification times kept) is still up to date there; stamps written before that still match where they were
written."""
from __future__ import annotations

import shutil
from pathlib import Path

from evaluation.study import stamps
from runtime.digest import json_sha256


def _checkout(root: Path, monkeypatch) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(stamps, "REPO", root)
    return root


def test_paths_inside_the_repository_are_stamped_relative_to_it(tmp_path, monkeypatch):
    repo = _checkout(tmp_path / "a", monkeypatch)
    value = {"run": str(repo / "OUTPUT" / "g"), "root": str(repo), "data": "/data/x", "n": 3,
             "list": [str(repo / "DATA" / "s.json"), str(tmp_path / "ab" / "other")]}
    assert stamps.portable(value) == {"run": "$REPO/OUTPUT/g", "root": "$REPO", "data": "/data/x", "n": 3,
                                      "list": ["$REPO/DATA/s.json", str(tmp_path / "ab" / "other")]}
    assert stamps.local(stamps.portable(value)) == value


def test_a_study_folder_moved_to_another_checkout_is_still_up_to_date(tmp_path, monkeypatch):
    a = _checkout(tmp_path / "a", monkeypatch)
    out = a / "OUTPUT" / "study"
    (out / "generated").mkdir(parents=True)
    (out / "generated" / "x.png").write_bytes(b"pixels")
    inputs = {"inputs": {"split": str(a / "DATA" / "split.json"), "steps": 20}, "deps": {"split": "d"}}
    outputs = {"generated": str(out / "generated"), "paths": [str(out / "generated")]}
    store = stamps.StampStore(out)
    written = store.write("s.generation", stamps.input_hash(inputs), inputs, outputs, 1.0)
    assert "$REPO/OUTPUT/study/generated" in store.path("s.generation").read_text()
    b = tmp_path / "b"
    shutil.move(str(a), str(b))  # a move keeps modification times
    _checkout(b, monkeypatch)
    read = stamps.StampStore(b / "OUTPUT" / "study").read("s.generation")
    moved = {"inputs": {"split": str(b / "DATA" / "split.json"), "steps": 20}, "deps": {"split": "d"}}
    assert read["outputs"]["generated"] == str(b / "OUTPUT" / "study" / "generated")
    assert stamps.hash_matches(read["hash"], moved) and not stamps.hash_matches(read["hash"], {**moved, "x": 1})
    assert stamps.outputs_digest(read["outputs"]) == written["digest"]  # the same completion, downstream stays


def test_a_stamp_written_with_absolute_paths_still_matches_where_it_was_written(tmp_path, monkeypatch):
    repo = _checkout(tmp_path / "a", monkeypatch)
    inputs = {"inputs": {"split": str(repo / "DATA" / "split.json")}, "deps": {}}
    assert stamps.hash_matches(json_sha256(inputs), inputs)
    assert not stamps.hash_matches(json_sha256({**inputs, "deps": {"x": "y"}}), inputs)
    assert not stamps.hash_matches(None, inputs)
