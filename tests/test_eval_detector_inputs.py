"""detector.predict: bad batch sizes and files that are not images give one line, nothing written."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluation.detector import predict
from evaluation.detector.model import build_model
from evaluation.detector.runs import run_summary
from evaluation.detector.train import DEFAULT_CONFIG
from runtime.configs import load_config, to_plain
from runtime.errors import run_cli


@pytest.fixture(scope="module")
def detector_ckpt(tmp_path_factory) -> Path:
    """An untrained detector.safetensors as evaluation.detector.train writes it."""
    from evaluation.detector.runs import write_final

    cfg = load_config(DEFAULT_CONFIG, DEFAULT_CONFIG, ["data.image_size=32", "train.device=cpu"])
    path = tmp_path_factory.mktemp("det") / "detector.safetensors"
    return write_final(path, build_model(cfg.model).state_dict(), to_plain(cfg), {"epochs": 0, "n_train": 0})


def _error(argv, capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as code:
        run_cli(lambda: predict.main(argv))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _images(folder: Path, n: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((20, 24), 40 * i, np.uint8)).save(folder / f"In_{i + 1}.png")
    return folder


@pytest.mark.parametrize("size", ["0", "-1"])
def test_batch_size_below_one_is_refused(tmp_path, capsys, detector_ckpt, size):
    out = tmp_path / "maps"
    line = _error(["--ckpt", str(detector_ckpt), "--images", str(_images(tmp_path / "im")), "--out", str(out),
                   "--batch_size", size], capsys)
    assert "--batch_size must be at least 1" in line and not out.exists()


def test_predicts_maps_and_refuses_a_non_image_file(tmp_path, capsys, detector_ckpt):
    images = _images(tmp_path / "im")
    assert predict.main(["--ckpt", str(detector_ckpt), "--images", str(images), "--out", str(tmp_path / "ok"),
                         "--batch_size", "1", "--device", "cpu"]) == 0
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == ["In_1.png", "In_2.png"]
    assert Image.open(tmp_path / "ok" / "In_1.png").size == (24, 20)
    (images / "In_3.png").write_text("text, not a picture")
    line = _error(["--ckpt", str(detector_ckpt), "--images", str(images), "--out", str(tmp_path / "bad"),
                   "--device", "cpu"], capsys)
    assert "In_3.png: cannot read image" in line and not (tmp_path / "bad").exists()


def test_training_state_written_by_train_is_read_back_by_the_safe_loader(tmp_path):
    from dataset.procedural import write_procedural_dataset
    from evaluation.detector.train import train_detector

    pairs = write_procedural_dataset(tmp_path / "pairs", 1, size=32)
    over = ["data.image_size=32", "train.device=cpu", "train.batch_size=3", "train.augment=false"]
    logs: list[str] = []
    train_detector(load_config(DEFAULT_CONFIG, DEFAULT_CONFIG, over + ["train.epochs=1"]), pairs, tmp_path / "d",
                   log=logs.append, progress=False)
    final = train_detector(load_config(DEFAULT_CONFIG, DEFAULT_CONFIG, over + ["train.epochs=2"]), pairs,
                           tmp_path / "d", resume=True, log=logs.append, progress=False)
    assert any(line.startswith("resume:") and "at epoch 1" in line for line in logs)
    assert predict.Detector(final, "cpu").cfg.train.epochs == 2


def test_min_steps_gives_a_small_training_set_more_epochs(tmp_path):

    from dataset.procedural import write_procedural_dataset
    from evaluation.detector.train import train_detector

    pairs = write_procedural_dataset(tmp_path / "pairs", 2, size=32)        # 6 pairs: 2 steps of batch 3
    over = ["data.image_size=32", "train.device=cpu", "train.batch_size=3", "train.augment=false", "train.epochs=1",
            "train.num_threads=1"]
    for min_steps, epochs in ((None, 1), (1, 1), (5, 3)):
        out = tmp_path / f"d{min_steps}"
        train_detector(load_config(DEFAULT_CONFIG, DEFAULT_CONFIG, over + [f"train.min_steps={min_steps or 'null'}"]),
                       pairs, out, log=lambda m: None, progress=False)
        assert run_summary(out)["epochs"] == epochs, min_steps


def test_train_cli_resumes_automatically_like_the_other_tools(tmp_path, capsys):
    """Same resume policy as main.py and maskgen.train: a second run continues from OUT/latest.json."""
    from dataset.procedural import write_procedural_dataset
    from evaluation.detector import train

    write_procedural_dataset(tmp_path / "pairs", 4, size=32)
    argv = ["--data_root", str(tmp_path / "pairs"), "--out", str(tmp_path / "d"), "--no_progress", "--set",
            "data.image_size=32", "train.device=cpu", "train.batch_size=4", "train.augment=false"]
    train.main(argv + ["train.epochs=1"])
    capsys.readouterr()
    train.main(argv + ["train.epochs=2"])
    out = capsys.readouterr()
    assert "at epoch 1" in out.out + out.err, out


@pytest.mark.parametrize("n_real,n_total,batch,share", [(150, 1050, 16, 0.5), (10, 13, 4, 0.3), (7, 40, 16, 0.8),
                                                         (33, 100, 8, 0.25)])
def test_real_share_batches_keep_real_pairs_at_the_share_of_every_batch(n_real, n_total, batch, share):
    from evaluation.detector.data import RealShareBatches

    sampler = RealShareBatches(n_real, n_total, batch, share, seed=1)
    seen_real, seen_gen = np.zeros(n_real, int), np.zeros(n_total - n_real, int)
    for epoch in range(6):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        # an epoch is one pass over the real pairs in batches of the real-only run's size
        assert len(batches) == len(sampler) == max(1, n_real // min(batch, n_real))
        for b in batches:
            real = [i for i in b if i < n_real]
            assert len(real) == min(batch, n_real) and len(set(real)) == len(real)
            assert abs(len(real) - share * len(b)) <= 1, (len(real), len(b))
            seen_real[real] += 1
            np.add.at(seen_gen, [i - n_real for i in b if i >= n_real], 1)
    assert seen_real.max() - seen_real.min() <= 6 and seen_gen.max() - seen_gen.min() <= 1
    sampler.set_epoch(2)
    again = RealShareBatches(n_real, n_total, batch, share, seed=1)
    again.set_epoch(2)
    assert list(sampler) == list(again)  # deterministic per seed and epoch (resumable)


def test_every_setting_takes_the_same_steps_and_warm_up_under_min_steps(tmp_path):
    """Real pairs alone, real + generated, and real + generated at a real share of 0.5: one step count, one
    warm-up; the fair run's batches hold as many real pairs as the real-only run's."""

    from dataset.procedural import write_procedural_dataset
    from evaluation.detector.train import train_detector

    real = write_procedural_dataset(tmp_path / "real", 2, size=32, seed=1)             # 6 pairs
    gen = write_procedural_dataset(tmp_path / "gen", 4, size=32, seed=2)               # 12 pairs
    over = ["data.image_size=32", "train.device=cpu", "train.batch_size=3", "train.augment=false",
            "train.epochs=2", "train.min_steps=13", "train.warmup_epochs=1", "model.widths=[8,8,8,8,8]",
            "model.depths=[0,1,1,1,1]", "train.num_threads=1"]
    logs = {}
    for name, pairs, extra in (("real", real, []), ("plain", real + gen, []),
                               ("fair", real + gen, ["train.real_share=0.5"])):
        out = tmp_path / name
        train_detector(load_config(DEFAULT_CONFIG, DEFAULT_CONFIG, over + extra), pairs, out, log=lambda m: None,
                       progress=False, n_real=len(real))
        logs[name] = run_summary(out)
    # 2 steps an epoch on real (6 / 3) and in the fair run, 6 on real + generated: 13 steps and a warm-up of
    # 1/2 x 13 = 6 steps for all three (whole epochs and warm-up in epochs gave 14 / 18 steps, warm-up 2 / 6)
    assert {n: (log["steps"], log["warmup_steps"]) for n, log in logs.items()} == {n: (13, 6) for n in logs}
    assert logs["fair"]["batch_size"] == 6 and logs["real"]["batch_size"] == logs["plain"]["batch_size"] == 3


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.2", "nan", "inf", "half", "true"])
def test_bad_real_share_is_one_line(tmp_path, capsys, value):
    from dataset.procedural import write_procedural_dataset
    from evaluation.detector import train

    write_procedural_dataset(tmp_path / "pairs", 1, size=32)
    capsys.readouterr()
    with pytest.raises(SystemExit) as code:
        run_cli(lambda: train.main(["--data_root", str(tmp_path / "pairs"), "--out", str(tmp_path / "d"),
                                    "--no_progress", "--set", f"train.real_share={value}"]))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "train.real_share" in lines[0] and "between 0 and 1" in lines[0], lines[0]
    assert not (tmp_path / "d").exists()
