"""Train/test splits: protocols, determinism, stratification, persistence."""
from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from dataset import find_pairs, load_split, make_split, parse_ratio, save_split, subset_pairs, write_procedural_dataset
from runtime.errors import UserError

STEMS = [f"{p}_{i}" for p in ("In", "Pa", "Sc") for i in range(1, 301)]


def per_prefix(stems: list[str]) -> Counter:
    return Counter(s.split("_")[0] for s in stems)


def test_parse_ratio() -> None:
    assert parse_ratio("9:1") == pytest.approx(0.1)
    assert parse_ratio("1:5") == pytest.approx(5 / 6)
    assert parse_ratio(" 0.25 ") == pytest.approx(0.25)
    for bad in ("9-1", "a:b", "1:2:3", "-1:2", "0:0", "1.5", ""):
        with pytest.raises(UserError) as exc:
            parse_ratio(bad)
        assert "\n" not in str(exc.value)


@pytest.mark.parametrize("ratio, n_train, n_test", [("9:1", 270, 30), ("1:5", 50, 250)])
def test_protocol_sizes_stratified(ratio: str, n_train: int, n_test: int) -> None:
    split = make_split(STEMS, parse_ratio(ratio), seed=0)
    assert len(split["train"]) == 3 * n_train and len(split["test"]) == 3 * n_test
    assert per_prefix(split["train"]) == {"In": n_train, "Pa": n_train, "Sc": n_train}
    assert per_prefix(split["test"]) == {"In": n_test, "Pa": n_test, "Sc": n_test}
    assert not set(split["train"]) & set(split["test"])
    assert sorted(split["train"] + split["test"]) == sorted(STEMS)
    assert split["seed"] == 0 and split["test_fraction"] == pytest.approx(parse_ratio(ratio))


def test_deterministic_and_order_independent() -> None:
    a = make_split(STEMS, 0.1, seed=3)
    shuffled = STEMS[:]
    random.Random(1).shuffle(shuffled)
    assert make_split(shuffled, 0.1, seed=3) == a
    b = make_split(STEMS, 0.1, seed=4)
    assert a["test"] != b["test"]
    assert len(set(a["test"]) & set(b["test"])) < len(a["test"])


def test_unstratified_split_can_unbalance() -> None:
    stems = [f"In_{i}" for i in range(1, 91)] + [f"Sc_{i}" for i in range(1, 11)]
    strat = make_split(stems, 0.1, seed=0)
    assert per_prefix(strat["test"]) == {"In": 9, "Sc": 1}
    flat = make_split(stems, 0.1, seed=0, stratify_by_category=False)
    assert len(flat["test"]) == 10 and flat["stratify_by_category"] is False


def test_split_of_pairs_uses_categories(tmp_path: Path) -> None:
    pairs = write_procedural_dataset(tmp_path / "d", n_per_category=6, size=12, seed=0)
    split = make_split(pairs, parse_ratio("1:5"), seed=1)
    assert per_prefix(split["train"]) == {"In": 1, "Pa": 1, "Sc": 1}
    train = subset_pairs(pairs, split["train"])
    assert [p.stem for p in train] == split["train"]


def test_real_dataset_split(saliency_root: Path) -> None:
    split = make_split(find_pairs(saliency_root, check_sizes=False), 0.1, seed=0)
    assert per_prefix(split["test"]) == {"In": 30, "Pa": 30, "Sc": 30}


def test_bad_split_inputs() -> None:
    for args in ((STEMS, 1.5, 0), ([], 0.1, 0), (["In_1", "In_1"], 0.1, 0)):
        with pytest.raises(UserError) as exc:
            make_split(*args)
        assert "\n" not in str(exc.value)


def test_save_and_load(tmp_path: Path) -> None:
    split = make_split(STEMS, 0.1, seed=0)
    path = save_split(split, tmp_path / "split.json")
    assert load_split(path) == split
    assert [p.name for p in tmp_path.iterdir()] == ["split.json"]   # no temp files left


@pytest.mark.parametrize("content, needle", [
    ("{not json", "malformed"),
    (json.dumps({"train": [], "test": []}), "missing"),
    (json.dumps({"train": ["a"], "test": ["a"], "seed": 0, "test_fraction": 0.1}), "both"),
    (json.dumps({"train": "a", "test": [], "seed": 0, "test_fraction": 0.1}), "list"),
])
def test_load_split_errors(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "split.json"
    path.write_text(content)
    with pytest.raises(UserError) as exc:
        load_split(path)
    msg = str(exc.value)
    assert "\n" not in msg and "split.json" in msg and needle in msg
    with pytest.raises(UserError):
        load_split(tmp_path / "absent.json")


def test_subset_pairs_errors(tmp_path: Path) -> None:
    pairs = write_procedural_dataset(tmp_path / "d", n_per_category=2, size=12, seed=0)
    with pytest.raises(UserError) as exc:
        subset_pairs(pairs, ["In_1", "In_9", "Zz_3"])
    msg = str(exc.value)
    assert "\n" not in msg and "In_9" in msg and "Zz_3" in msg and "In_1," not in msg
    with pytest.raises(UserError):
        subset_pairs(pairs, ["In_1", "In_1"])


def test_validation_is_carved_from_the_training_pairs_only():
    from dataset.splits import carve_validation, make_split

    stems = [f"{c}_{i}" for c in ("In", "Pa", "Sc") for i in range(1, 101)]
    parent = make_split(stems, 0.1, 0)
    val = carve_validation(parent, 0.1, 0)
    assert set(val["train"]) | set(val["test"]) == set(parent["train"])
    assert not set(val["test"]) & set(parent["test"]) and not set(val["train"]) & set(parent["test"])
    assert val["parent_test"] == parent["test"]
    assert sorted(s.split("_")[0] for s in val["test"]).count("Pa") == 9  # stratified: 9 of each 90
    assert carve_validation(parent, 0.1, 0) == val and carve_validation(parent, 0.1, 1)["test"] != val["test"]


def test_carve_validation_command_writes_a_new_split_and_never_overwrites(tmp_path, capsys):
    from evaluation.protocols import main

    stems = [f"{c}_{i}" for c in ("In", "Pa", "Sc") for i in range(1, 101)]
    parent = save_split(make_split(stems, 0.1, 0), tmp_path / "split.json")
    out = tmp_path / "split_val0.json"
    assert main(["carve-validation", "--split", str(parent), "--out", str(out)]) == 0
    val = load_split(out)
    assert len(val["test"]) == 27 and len(val["train"]) == 243 and len(val["parent_test"]) == 30
    assert "243 training / 27 validation" in capsys.readouterr().out
    before = out.read_bytes()
    with pytest.raises(UserError, match="exists"):
        main(["carve-validation", "--split", str(parent), "--out", str(out), "--seed", "1"])
    assert out.read_bytes() == before
    with pytest.raises(UserError, match="--fraction"):
        main(["carve-validation", "--split", str(parent), "--out", str(tmp_path / "v.json"), "--fraction", "1"])


def test_one_split_module_makes_a_split_file_once_and_reads_it_back(tmp_path: Path) -> None:
    """dataset.splits is the only split module (evaluation.splitfile is gone): a split file is made on first use,
    read back unchanged on the next, and split_pairs hands out the pairs it names."""
    from dataset.splits import default_split_path, get_split, split_pairs

    assert not (Path(__file__).resolve().parents[1] / "evaluation" / "splitfile.py").exists()
    pairs = write_procedural_dataset(tmp_path / "d", n_per_category=6, size=12, seed=0)
    path = tmp_path / "split.json"
    made, at = get_split(pairs, path, "1:5", 3, tmp_path / "d", log=lambda m: None)
    lines: list[str] = []
    again, _ = get_split(pairs, path, "9:1", 4, tmp_path / "d", log=lines.append)  # an existing file wins
    assert at == path and again == made == load_split(path) and lines[0].startswith(f"split: {path} ")
    train, test, _ = split_pairs(tmp_path / "d", path, "1:5", 3, log=lambda m: None)
    assert [p.stem for p in train] == made["train"] and [p.stem for p in test] == made["test"]
    auto = default_split_path(tmp_path / "my data", "9:1", 2)
    assert auto.name == "my_data_9-1_seed2.json" and auto.parent.parts[-2:] == ("DATA", "splits")


def test_a_splits_files_are_picked_from_a_listing_in_the_splits_order(tmp_path: Path) -> None:
    from dataset.splits import pick_split_files

    files = {s: tmp_path / f"{s}.png" for s in ("In_1", "In_2", "Pa_1")}
    assert list(pick_split_files(files, ["Pa_1", "In_1"], tmp_path, "image")) == ["Pa_1", "In_1"]
    with pytest.raises(UserError, match=rf"^{tmp_path}: 2 split sample\(s\) have no ground truth \(Sc_1, Sc_2\); "
                                        "use the split made for this dataset$"):
        pick_split_files(files, ["In_1", "Sc_1", "Sc_2"], tmp_path, "ground truth")
    stems = [f"X_{i}" for i in range(8)]
    with pytest.raises(UserError, match=r"8 sample\(s\) of the split are not in the dataset: X_0, X_1, X_2, X_3, "
                                        r"X_4 and 3 more; use a split"):
        subset_pairs([], stems)
