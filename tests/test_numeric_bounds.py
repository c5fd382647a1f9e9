"""Every number checked where it is parsed (finite, in range, bounded above), --plan as strict as the run,
and a resumed detector that keeps its settings: nonsense is one line, before anything trains or allocates."""
from __future__ import annotations

import pytest

from evaluation.detector.checks import check_detector_config
from evaluation.detector.train import DEFAULT_CONFIG
from runtime.configs import load_config
from runtime.errors import UserError, run_cli

TINY_DETECTOR = ["model.arch=unet", "model.encoder=test_resnet", "model.decoder_channels=[32,24,16,16]",
                 "data.image_size=32",
                 "train.device=cpu", "train.batch_size=4", "train.augment=false", "train.epochs=1"]


def cli_error(main, argv, capsys) -> str:
    """``main(argv)`` through run_cli: exit 2 and one ``error`` line, no traceback."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: main(argv))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("override, message", [
    ("train.epochs=0", "train.epochs must be a finite number >= 1"),
    ("train.epochs=-1", "train.epochs must be a finite number >= 1"),
    ("train.max_minutes=-1", "train.max_minutes must be a finite number > 0"),
    ("train.bce_weight=.nan", "train.bce_weight must be a finite number >= 0"),
    ("data.image_size=0", "data.image_size must be a finite number >= 16"),
    ("data.image_size=-8", "data.image_size must be a finite number >= 16"),
    ("data.image_size=100000", "data.image_size must be a finite number >= 16 and <= 2048"),
    ("train.lr=.nan", "train.lr must be a finite number > 0"),
    ("train.batch_size=0", "train.batch_size must be a finite number >= 1"),
    ("train.num_threads=-1", "train.num_threads must be a finite number >= 0"),
])
def test_detector_config_numbers_are_checked(override, message):
    with pytest.raises(UserError, match=message):
        check_detector_config(load_config(DEFAULT_CONFIG, DEFAULT_CONFIG, [override]))


def test_detector_train_refuses_before_reading_data(tmp_path, capsys):
    from evaluation.detector import train

    line = cli_error(train.main, ["--data_root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "d"),
                                  "--set", "train.bce_weight=.nan"], capsys)
    assert "train.bce_weight" in line and not (tmp_path / "d").exists()


def test_detector_ratio_without_a_training_share_is_refused_before_a_split_is_written(tmp_path, capsys):
    """--ratio 0:1 leaves no training pairs: an argparse line, no split file; N:0 (every pair trains) parses."""
    from evaluation.detector import train

    split = tmp_path / "split.json"
    with pytest.raises(SystemExit) as exc:
        train.main(["--data_root", str(tmp_path), "--out", str(tmp_path / "d"), "--split", str(split),
                    "--ratio", "0:1"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "argument --ratio: '0:1' leaves no training pairs" in err, err
    assert not split.exists() and not (tmp_path / "d").exists()
    assert train.train_ratio("1:0") == "1:0"


def test_detector_resume_refuses_another_image_size(tmp_path):
    from dataset.procedural import write_procedural_dataset
    from evaluation.detector.train import train_detector

    pairs = write_procedural_dataset(tmp_path / "pairs", 1, size=32)
    cfg = load_config(DEFAULT_CONFIG, DEFAULT_CONFIG, TINY_DETECTOR)
    train_detector(cfg, pairs, tmp_path / "d", log=lambda m: None, progress=False)
    other = load_config(DEFAULT_CONFIG, DEFAULT_CONFIG, [*TINY_DETECTOR, "data.image_size=64", "train.epochs=2"])
    with pytest.raises(UserError, match=r"resuming with a different data.image_size 32 -> 64"):
        train_detector(other, pairs, tmp_path / "d", resume=True, log=lambda m: None, progress=False)
    longer = load_config(DEFAULT_CONFIG, DEFAULT_CONFIG, [*TINY_DETECTOR, "train.epochs=2"])  # may train longer
    train_detector(longer, pairs, tmp_path / "d", resume=True, log=lambda m: None, progress=False)
    from evaluation.detector.runs import run_summary

    assert run_summary(tmp_path / "d")["epochs"] == 2


def test_output_size_and_resolution_lists_are_bounded(tmp_path, capsys):
    from evaluation import resolution_ceiling
    from inference.generate import GenerationOptions

    with pytest.raises(UserError, match="--output_size must be a number of pixels from 1 to 4096"):
        GenerationOptions(output_size=100000)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        resolution_ceiling.main(["--real", str(tmp_path), "--sizes", "64", "100000"])
    assert exc.value.code == 2 and "must be at most 4096" in capsys.readouterr().err


def test_maskgen_threads_and_time_limit_are_checked(tmp_path, capsys):
    from maskgen.train import main

    for flag, value in (("--threads", "-2"), ("--max_minutes", "-1"), ("--max_minutes", "nan")):
        with pytest.raises(SystemExit) as exc:
            main(["--data_root", str(tmp_path), "--out", str(tmp_path / "run"), flag, value])
        assert exc.value.code == 2 and flag in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_an_unknown_mask_encoder_backbone_is_one_line(tmp_path):
    from train_helpers import run_main, tiny_train_config

    config = tiny_train_config(tmp_path)
    with pytest.raises(UserError, match="backbone 'convnext_nope' is not a timm ConvNeXt"):
        run_main(config, tmp_path, "x", "--set", "model.params.grounding_tokenizer.params.backbone=convnext_nope")


def test_protocols_retrain_over_a_damaged_run_json(tmp_path):
    from evaluation.protocols import _read_meta

    for text in ("{not json", "[1, 2]", "\xff"):
        (tmp_path / "run.json").write_text(text, encoding="latin-1")
        assert _read_meta(tmp_path / "run.json") == {}
    assert _read_meta(tmp_path / "missing.json") == {}


@pytest.mark.parametrize("override, message", [
    ("studies.expansion.maskgen.calibrate.n_per_category=2", "calibrate.n_per_category must be a finite number >= 10"),
    ("studies.substitution.ratio=0:1", "studies.substitution.ratio '0:1' leaves the training set empty"),
    ("studies.substitution.ratio='9:0'", "leaves the test set empty"),
    ("studies.substitution.ratio=9:1", "write the train:test ratio in quotes"),
    ("studies.expansion.filter.threshold=1.5", "filter.threshold must lie in [0, 1]"),
    ("studies.substitution.generation.output_size=100000", "output_size must be a whole number >= 1 and <= 4096"),
    ("studies.substitution.detectors.overrides=[train.epochs=0]", "train.epochs must be a finite number >= 1"),
])
def test_study_plan_refuses_what_the_run_would_refuse(tmp_path, capsys, override, message):
    from test_study import write_tiny_study

    from evaluation.study import main as study_main

    config = write_tiny_study(tmp_path)
    line = cli_error(study_main, ["--config", str(config), "--plan", "--set", override], capsys)
    assert message in line, line
