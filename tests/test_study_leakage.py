"""evaluation.study.leakage on its own: which stems, run folders, generated folders, copies of test pictures,
rewritten splits and initial checkpoints count as test samples reaching a training stage, and what is let
through."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file

from dataset.files import sample_stem, source_stem
from dataset.pairs import find_pairs
from dataset.splits import load_split, make_split, parse_ratio, save_split
from evaluation.study import leakage
from evaluation.study.leakage import LeakError
from evaluation.study.stages.split import keep_copies_in_test
from runtime.digest import file_sha256
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


# -- content: renamed copies and re-encodings of test items -----------------------------------------
def write_picture(path: Path, arr: np.ndarray, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).convert(mode).save(path)
    return path


@pytest.fixture
def data(tmp_path):
    """A tiny dataset: In_1..In_3 and Pa_1..Pa_2, random 8x8 grey images (BMP) and 0/255 masks (PNG)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for stem in ("In_1", "In_2", "In_3", "Pa_1", "Pa_2"):
        write_picture(root / "Source_Images" / f"{stem}.bmp", rng.integers(0, 256, (8, 8), dtype=np.uint8))
        write_picture(root / "Ground_truth" / f"{stem}.png", (rng.random((8, 8)) > 0.5).astype(np.uint8) * 255)
    pairs = {p.stem: p for p in find_pairs(root, check_sizes=False)}
    return root, pairs, leakage.test_digests([pairs["In_3"], pairs["Pa_2"]])


def test_pixel_digest_sees_through_renames_and_lossless_reencodings(data, tmp_path):
    _, pairs, _ = data
    image, mask = pairs["In_3"].image, pairs["In_3"].mask
    arr = np.asarray(Image.open(image))
    same = [shutil.copy(image, tmp_path / "x.bmp"), write_picture(tmp_path / "x.png", arr),
            write_picture(tmp_path / "x_rgb.png", arr, "RGB")]
    assert {leakage.pixel_digest(f) for f in same} == {leakage.pixel_digest(image)}
    assert leakage.pixel_digest(write_picture(tmp_path / "m1.png", np.asarray(Image.open(mask)), "1")) == \
        leakage.pixel_digest(mask)
    changed = arr.copy()
    changed[0, 0] ^= 1
    assert leakage.pixel_digest(write_picture(tmp_path / "y.png", changed)) != leakage.pixel_digest(image)
    write_picture(tmp_path / "x.png", changed)  # rewritten in place: not served from the cache
    assert leakage.pixel_digest(tmp_path / "x.png") == leakage.pixel_digest(tmp_path / "y.png")


@pytest.mark.parametrize("source, copy_name, what", [
    ("mask", "generated/Ground_truth/In_gen_1.png", "test mask In_3"),   # a test mask copied and renamed
    ("image", "data2/Source_Images/In_99.bmp", "test image In_3"),      # the real test image renamed
    ("image", "gen/Source_Images/In_3_copy.png", "test image In_3"),    # <test>_copy, re-encoded as PNG
    ("mask", "train_masks/Sc_77.png", "test mask In_3"),                # a renamed test mask in maskgen's input
])
def test_a_copy_of_a_test_item_under_any_name_is_refused(data, tmp_path, source, copy_name, what):
    _, pairs, tests = data
    original = getattr(pairs["In_3"], source)
    copy = write_picture(tmp_path / copy_name, np.asarray(Image.open(original)))
    clean = [pairs["In_1"].image, pairs["In_1"].mask, pairs["Pa_1"].mask]
    leakage.refuse_test_content("s.maskgen", clean, tests, "fix")
    with pytest.raises(LeakError) as exc:
        leakage.refuse_test_content("s.maskgen", [*clean, copy], tests, "use training items only")
    message = str(exc.value)
    assert message.startswith(f"leak: stage s.maskgen would train on {copy}, whose pixels equal the {what} (")
    assert "\n" not in message and message.endswith("; use training items only")


def test_a_split_with_a_copy_of_a_test_item_on_its_training_side(data, tmp_path):
    _, pairs, _ = data
    shutil.copy(pairs["In_3"].image, pairs["In_1"].image)  # the dataset itself holds the same image twice
    split = {"train": ["In_1", "In_2", "Pa_1"], "test": ["In_3", "Pa_2"], "seed": 0, "test_fraction": 0.4}
    path = save_split(split, tmp_path / "split.json")
    with pytest.raises(LeakError, match=r"1 training pair\(s\) have the pixels of a test item \(In_1: the test image "
                                        "In_3"):
        keep_copies_in_test(split, path, pairs, made=False, log=print)
    logged = []
    fixed = keep_copies_in_test(split, path, pairs, made=True, log=logged.append)
    assert fixed["train"] == ["In_2", "Pa_1"] and fixed["test"] == ["In_1", "In_3", "Pa_2"]
    assert load_split(path) == fixed and "moved to the test side" in logged[0]


def test_a_split_rewritten_after_training_is_refused(tmp_path, splits):
    clean, _ = splits
    run = tmp_path / "run"
    leakage.split_unchanged("e.generator", run, clean)  # recorded when the stage trains
    assert json.loads((run / leakage.SPLIT_RECORD).read_text())["split"] == str(clean.resolve())
    leakage.split_unchanged("e.generator", run)  # used later: unchanged
    save_split({**load_split(clean), "train": ["In_1"], "test": ["In_3", "Pa_2", "Pa_7"]}, clean)
    for args in ((run,), (run, clean)):
        with pytest.raises(UserError, match=r"clean.json: the split changed after stage e.generator trained on it "
                                            r".*restore the split file, or rerun with --force e.generator"):
            leakage.split_unchanged("e.generator", *args)
    # the checkpoint's own record (written by training)
    ckpt = write_weights(tmp_path / "w.safetensors", split=str(clean), split_sha256="0" * 64)
    with pytest.raises(UserError, match="the split changed after .*w.safetensors was trained on it"):
        leakage.ckpt_split_unchanged("e.generator", ckpt)
    leakage.ckpt_split_unchanged("e.generator", write_weights(tmp_path / "v.safetensors", split=str(clean),
                                                              split_sha256=file_sha256(clean)))


def write_weights(path: Path, **metadata: str) -> Path:
    save_file({"model.x": torch.zeros(1)}, str(path), metadata=dict(metadata))
    return path


def test_an_initial_checkpoint_must_name_its_provenance(data, tmp_path, splits):
    root, pairs, tests = data
    clean, leaky = splits
    check = lambda ckpt, split=clean: leakage.check_init_checkpoint("e.generator", ckpt, split, TEST, tests)  # noqa: E731
    assert check(None) == "from scratch"
    assert check(write_weights(tmp_path / "p.safetensors", procedural="true")) == "procedural data"
    same = write_weights(tmp_path / "s.safetensors", split=str(clean), split_sha256=file_sha256(clean),
                         data_root=str(root), procedural="false")
    assert check(same) == "the study's split"
    bare = write_weights(tmp_path / "bare.safetensors")
    with pytest.raises(LeakError, match=r"bare.safetensors names no provenance .*bare.safetensors.provenance.json"):
        check(bare)
    other = write_weights(tmp_path / "o.safetensors", split=str(leaky), split_sha256=file_sha256(leaky),
                          data_root=str(root))
    with pytest.raises(LeakError, match="would train on 1 test sample"):
        check(other)  # another split whose training side holds a test sample of this study
    gone = write_weights(tmp_path / "g.safetensors", split=str(tmp_path / "gone.json"), split_sha256="1" * 64)
    with pytest.raises(LeakError, match="gone.json .*which is not found"):
        check(gone)
    with pytest.raises(LeakError, match="trained on every pair of"):
        check(write_weights(tmp_path / "a.safetensors", data_root=str(root)))
    # another split, no test stem, but a renamed copy of a test image among its training pairs
    shutil.copy(pairs["In_3"].image, pairs["In_2"].image)
    renamed = save_split({"train": ["In_1", "In_2"], "test": ["Pa_1"], "seed": 0, "test_fraction": 0.3},
                         tmp_path / "renamed.json")
    with pytest.raises(LeakError, match=r"In_2.bmp, whose pixels equal the test image In_3"):
        check(write_weights(tmp_path / "r.safetensors", split=str(renamed), split_sha256=file_sha256(renamed),
                            data_root=str(root)))
    # an external release (a pickle, no metadata) with and without its declaration
    release = tmp_path / "release.bin"
    release.write_bytes(b"weights")
    with pytest.raises(LeakError, match="names no provenance"):
        check(release)
    sidecar = tmp_path / "release.bin.provenance.json"
    sidecar.write_text(json.dumps({"sha256": file_sha256(release), "training_data": "GLIGEN-sem release"}))
    assert check(release) == "declared in release.bin.provenance.json: GLIGEN-sem release"
    sidecar.write_text(json.dumps({"sha256": "0" * 64, "training_data": "x"}))
    with pytest.raises(UserError, match="its sha256 is not that of"):
        check(release)


def test_training_records_its_data_and_refuses_a_rewritten_split_on_resume(tmp_path, splits):
    from omegaconf import OmegaConf

    from training.checkpointing import Saved
    from training.data import data_provenance
    from training.trainer import check_split_unchanged

    clean, _ = splits
    cfg = OmegaConf.create({"data": {"procedural": {"n_per_category": 2}}})
    assert data_provenance(None, cfg) == {"data_root": "", "split": "", "split_sha256": "", "procedural": "true"}
    (tmp_path / "d").mkdir()
    now = data_provenance(str(tmp_path / "d"), OmegaConf.create({}), str(clean))
    assert now["split_sha256"] == file_sha256(clean) and now["procedural"] == "false"
    saved = Saved(5, tmp_path / "weights_5.safetensors", tmp_path / "state_5.pt")
    check_split_unchanged({"split_sha256": file_sha256(clean)}, now, saved, allow=False)
    check_split_unchanged({}, now, saved, allow=False)  # checkpoints written before the record
    with pytest.raises(UserError, match="the split file changed since this run trained on it"):
        check_split_unchanged({"split_sha256": "0" * 64}, now, saved, allow=False)


def test_real_data_digests_and_the_1_5_split(saliency_root):
    """The 900 real pairs: digest time, and the one image SD-Saliency-900 holds twice (Pa_101 = Pa_105), which
    the 1:5 split of seed 0 puts on both sides."""
    pairs = find_pairs(saliency_root, check_sizes=False)
    start = time.perf_counter()
    digests = leakage.test_digests(pairs)
    seconds = time.perf_counter() - start
    assert len(digests) == 2 * len(pairs) - 1 and seconds < 60
    by_stem = {p.stem: p for p in pairs}
    assert leakage.pixel_digest(by_stem["Pa_101"].image) == leakage.pixel_digest(by_stem["Pa_105"].image)
    split = make_split(pairs, parse_ratio("1:5"), 0)
    assert "Pa_105" in split["train"] and "Pa_101" in split["test"]


def test_a_release_used_as_the_generator_must_name_this_studys_split(tmp_path, splits):
    clean, leaky = splits
    check = lambda ckpt, split=clean: leakage.check_release("s.generator", ckpt, split)  # noqa: E731
    in_meta = write_weights(tmp_path / "m.safetensors", split_sha256=file_sha256(clean))
    assert "this study's split" in check(in_meta) and "its metadata" in check(in_meta)
    with pytest.raises(LeakError, match=r"trained on another split .*leaky.json"):
        check(in_meta, leaky)
    bare = write_weights(tmp_path / "bare.safetensors", split="DATA/splits/x.json", split_sha256="")
    with pytest.raises(LeakError, match=r"names no training split .*bare.safetensors.provenance.json"):
        check(bare)
    sidecar = tmp_path / "bare.safetensors.provenance.json"
    declared = {"sha256": file_sha256(bare), "training_data": "the clean split"}
    sidecar.write_text(json.dumps(declared))  # a declaration without the split's digest is not enough here
    with pytest.raises(LeakError, match="names no training split"):
        check(bare)
    sidecar.write_text(json.dumps({**declared, "split_sha256": file_sha256(clean)}))
    assert "bare.safetensors.provenance.json" in check(bare)
    with pytest.raises(LeakError, match="trained on another split"):
        check(bare, leaky)
    save_split({"train": ["In_1"], "test": sorted(TEST), "seed": 0, "test_fraction": 0.6}, clean)
    with pytest.raises(LeakError, match="trained on another split"):
        check(bare)  # the split rewritten after the release was made
    save_file({"model.x": torch.ones(1)}, str(bare), metadata={"split_sha256": ""})  # new weights, old declaration
    with pytest.raises(UserError, match="its sha256 is not that of"):
        check(bare)


def test_the_shipped_generator_names_the_substitution_split():
    """models/sd900_vpred.safetensors declares the 9:1 seed-0 split it was trained on (the study checks it)."""
    declared = leakage.read_provenance(Path(__file__).parents[1] / "models" / "sd900_vpred.safetensors")
    assert declared is not None and declared["split_sha256"].startswith("2d1f66b6")
