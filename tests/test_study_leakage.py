"""evaluation.study.leakage on its own: which stems, run folders and generated folders count as test samples
reaching a training stage, and what is let through."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dataset.files import sample_stem, source_stem
from dataset.splits import save_split
from evaluation.study import leakage
from evaluation.study.leakage import LeakError
from runtime.errors import UserError

TEST = {"In_3", "Pa_7"}


@pytest.mark.parametrize("stem, base", [("In_12_s3", "In_12"), ("In_12", "In_12"), ("Sc_5_s10", "Sc_5"),
                                        ("In_s1_x", "In_s1_x"), ("Pa_2_s", "Pa_2_s")])
def test_source_stem_drops_only_the_sample_suffix(stem, base):
    assert source_stem(stem) == base
    if base == stem and not stem.endswith("_s"):
        assert source_stem(sample_stem(stem, 4, 2)) == stem and sample_stem(stem, 0, 1) == stem


def test_refuse_test_stems_names_the_stage_and_every_test_sample():
    with pytest.raises(LeakError) as exc:
        leakage.refuse_test_stems("expansion.filter", ["In_1", "Pa_7", "In_3_s2", "In_30"], TEST, "its pairs", "fix it")
    message = str(exc.value)
    assert message.startswith("leak: stage expansion.filter would train on 2 test sample(s)")
    assert "In_3_s2" in message and "Pa_7" in message and "In_30" not in message and message.endswith("fix it")
    leakage.refuse_test_stems("s", ["In_1", "In_30", "In_30_s1", "Pa_70"], TEST, "its pairs", "fix")  # no leak


def test_check_stems_is_a_leak_error_and_a_user_error():
    with pytest.raises(UserError, match="use the study's training samples only"):
        leakage.check_stems("substitution.detectors", ["Pa_7"], TEST, "the split")


def test_same_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    assert leakage.same_path(None, "") and leakage.same_path("", None)
    assert not leakage.same_path(None, "data") and not leakage.same_path("data", None)
    assert leakage.same_path("data", tmp_path / "data")  # relative: read from the current directory
    assert leakage.same_path(str(tmp_path / "data"), str(tmp_path / "x" / ".." / "data"))
    assert not leakage.same_path(tmp_path / "data", tmp_path / "other")


def write_run(run_dir: Path, data_root, split, procedural: bool = False) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = {"train": {"DATA_ROOT": None if data_root is None else str(data_root),
                     "split": None if split is None else str(split)},
           "data": {"procedural": {"n_per_category": 2}} if procedural else {}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    return run_dir


def test_run_training_data(tmp_path):
    assert leakage.run_training_data(tmp_path / "none") is None
    run = write_run(tmp_path / "run", tmp_path / "data", tmp_path / "split.json")
    assert leakage.run_training_data(run) == {"data_root": str(tmp_path / "data"),
                                              "split": str(tmp_path / "split.json"), "procedural": False}
    assert leakage.run_training_data(write_run(tmp_path / "pre", None, None, procedural=True))["procedural"]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.yaml").write_text("train: [unclosed")
    with pytest.raises(UserError, match="unreadable run config"):
        leakage.run_training_data(tmp_path / "bad")


@pytest.fixture
def splits(tmp_path):
    clean = save_split({"train": ["In_1", "Pa_2"], "test": sorted(TEST), "seed": 0, "test_fraction": 0.5},
                       tmp_path / "clean.json")
    leaky = save_split({"train": ["In_1", "In_3"], "test": ["Pa_7"], "seed": 0, "test_fraction": 0.33},
                       tmp_path / "leaky.json")
    return clean, leaky


def test_check_generator_data_lets_a_new_run_or_a_clean_one_through(tmp_path, splits):
    clean, _ = splits
    data = tmp_path / "data"
    leakage.check_generator_data("g", tmp_path / "new_run", str(data), str(clean), TEST)
    leakage.check_generator_data("g", write_run(tmp_path / "run", data, clean), str(data), str(clean), TEST)


def test_check_generator_data_refuses(tmp_path, splits):
    clean, leaky = splits
    data = str(tmp_path / "data")
    cases = [(write_run(tmp_path / "pre", None, None, procedural=True), clean, LeakError, "procedural data"),
             (write_run(tmp_path / "other", tmp_path / "elsewhere", clean), clean, LeakError, "not on the study's"),
             (write_run(tmp_path / "all", data, None), clean, LeakError, "no split"),
             (write_run(tmp_path / "leaky", data, leaky), clean, LeakError, "would train on 1 test sample"),
             (tmp_path / "new", leaky, LeakError, "In_3"),
             (write_run(tmp_path / "gone", data, tmp_path / "gone.json"), clean, UserError, "is not found")]
    for run, split, error, words in cases:
        with pytest.raises(error, match=words):
            leakage.check_generator_data("g", run, data, str(split), TEST)
    with pytest.raises(UserError) as exc:
        leakage.check_generator_data("g", tmp_path / "gone", data, str(clean), TEST)
    assert not isinstance(exc.value, LeakError)


def write_generated(folder: Path, masks: dict[str, Path]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    images = {name: {"mask": str(mask)} for name, mask in masks.items()}
    (folder / "generation.json").write_text(json.dumps({"images": images}))
    return folder


def test_generated_sources_and_check_generated(tmp_path):
    data = tmp_path / "data"
    gen = write_generated(tmp_path / "gen", {"a_s0": data / "Ground_truth" / "In_3.png",
                                              "b_s0": data / "Ground truth" / "In_1.png",
                                              "c_s0": tmp_path / "new_masks" / "Pa_7.png"})
    assert leakage.generated_sources(gen, str(data)) == ["In_3", "In_1"]  # new masks are not dataset masks
    assert leakage.generated_sources(tmp_path / "no_record", str(data)) == []
    with pytest.raises(LeakError, match="generation.json: made from test masks"):
        leakage.check_generated("e.detectors", gen, ["a_s0", "b_s0", "c_s0"], str(data), TEST)
    with pytest.raises(LeakError, match="pairs named after test samples"):
        leakage.check_generated("e.detectors", tmp_path / "no_record", ["In_1_s0", "Pa_7_s1"], str(data), TEST)
    clean = write_generated(tmp_path / "clean", {"b_s0": data / "Ground_truth" / "In_1.png",
                                                  "c_s0": tmp_path / "new_masks" / "Pa_7.png"})
    leakage.check_generated("e.detectors", clean, ["b_s0", "c_s0"], str(data), TEST)
    (clean / "generation.json").write_text("{broken")
    with pytest.raises(UserError, match="unreadable generation record"):
        leakage.generated_sources(clean, str(data))
