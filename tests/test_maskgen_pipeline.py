"""Mask DDPM (maskgen): training, resuming, sampling and bad input, on a tiny synthetic dataset."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dataset.categories import DEFAULT_CATEGORIES, category_for_file
from maskgen import sample as sample_mod
from maskgen.checkpoint import load_checkpoint
from maskgen.config import load_config
from maskgen.model import build_model, model_from_checkpoint
from maskgen.train import main as train_main
from maskgen.train import train
from runtime.errors import UserError, run_cli

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "data": {"image_size": 16},
    "model": {"patch_size": 1, "base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
              "attention_levels": [1], "num_heads": 2, "dropout": 0.0, "groups": 4},
    "train": {"epochs": 2, "batch_size": 6, "lr": 2e-3, "warmup_steps": 0, "ema_decay": 0.9,
              "ckpt_every_epochs": 1},
    "sample": {"steps": 4, "size": 32, "batch_size": 4, "max_retries": 3},
}


def tiny_config(**train_overrides) -> dict:
    cfg = load_config()
    for section, values in TINY.items():
        cfg[section].update(copy.deepcopy(values))
    cfg["train"].update(train_overrides)
    return cfg


def _save(mask: np.ndarray, path: Path) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255, "L").save(path)


def make_masks(folder: Path, per_category: int = 6, size: int = 32) -> Path:
    """Blobs for inclusion, big squares for patches, thin vertical lines for scratches."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(per_category):
        m = np.zeros((size, size), bool)
        y, x = rng.integers(4, size - 8, 2)
        m[y:y + 4, x:x + 3] = True
        _save(m, folder / f"In_{i + 1}.png")
        m = np.zeros((size, size), bool)
        y, x = rng.integers(0, size // 2, 2)
        m[y:y + size // 2, x:x + size // 2] = True
        _save(m, folder / f"Pa_{i + 1}.png")
        m = np.zeros((size, size), bool)
        m[2:size - 2, rng.integers(2, size - 4):][:, :2] = True
        _save(m, folder / f"Sc_{i + 1}.png")
    return folder


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny models: one thread is faster, and much faster on a busy machine
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def trained(one_thread, tmp_path_factory):
    root = tmp_path_factory.mktemp("maskgen")
    data = make_masks(root / "data" / "Ground truth").parent
    run = root / "run"
    summary = train(tiny_config(), data, run, progress=False)
    return {"data": data, "run": run, "summary": summary}


def test_tiny_training_reduces_loss(tmp_path):
    data = make_masks(tmp_path / "masks")
    cfg = tiny_config(epochs=6)
    torch.manual_seed(0)
    from maskgen.data import training_data

    x, y, _ = training_data(data, DEFAULT_CATEGORIES, 16)
    g = torch.Generator().manual_seed(123)
    t = torch.randint(0, 1000, (x.shape[0],), generator=g)
    noise = torch.randn(x.shape, generator=g)
    torch.manual_seed(cfg["train"]["seed"])
    before_model = build_model(cfg, 3)
    before = before_model.fixed_loss(x, y, t, noise).item()
    summary = train(cfg, data, tmp_path / "run", progress=False)
    model, _ = model_from_checkpoint(load_checkpoint(tmp_path / "run"), "raw")
    with torch.no_grad():
        after = model.fixed_loss(x, y, t, noise).item()
    assert summary["epochs_done"] == 6
    print(f"fixed-batch loss {before:.3f} -> {after:.3f}")
    assert after < 0.8 * before, (before, after)
    assert summary["history"][-1]["loss"] < summary["history"][0]["loss"]


def test_resume_continues_exactly(tmp_path, trained):
    # two epochs in one go (the fixture) == one epoch, then a resumed second epoch
    run = tmp_path / "run"
    first = train(tiny_config(epochs=1), trained["data"], run, progress=False)
    assert first["epochs_done"] == 1
    second = train(tiny_config(epochs=2), trained["data"], run, progress=False)
    assert second["epochs_done"] == 2 and second["step"] == trained["summary"]["step"]
    a = load_checkpoint(run)["model"]
    b = load_checkpoint(trained["run"])["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    # a different model config in the same run folder is refused
    cfg = tiny_config(epochs=3)
    cfg["model"]["base_channels"] = 16
    with pytest.raises(UserError, match="different model"):
        train(cfg, trained["data"], run, progress=False)


def test_time_limit_stops_and_resumes_mid_epoch(tmp_path, trained):
    run = tmp_path / "run"
    stopped = train(tiny_config(epochs=2), trained["data"], run, max_minutes=0.0, progress=False)
    assert stopped["stopped"] == "time limit" and stopped["step"] == 1
    ckpt = load_checkpoint(run)
    assert (ckpt["epoch"], ckpt["batch"]) == (0, 1)
    done = train(tiny_config(epochs=2), trained["data"], run, progress=False)
    assert done["step"] == trained["summary"]["step"]
    a, b = load_checkpoint(run)["ema"], load_checkpoint(trained["run"])["ema"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def _settings(**kw) -> sample_mod.SampleSettings:
    base = dict(steps=4, size=32, batch_size=4, max_retries=3, seed=7)
    base.update(kw)
    return sample_mod.SampleSettings(**base)


def test_sampling_is_reproducible(trained):
    model, cats = model_from_checkpoint(load_checkpoint(trained["run"]))
    a = sample_mod.sample_masks(model, cats, cats, 5, _settings(), 16, progress=False)
    b = sample_mod.sample_masks(model, cats, cats, 5, _settings(), 16, progress=False)
    c = sample_mod.sample_masks(model, cats, cats, 5, _settings(seed=8), 16, progress=False)
    for ra, rb in zip(a, b):
        assert all(np.array_equal(x, y) for x, y in zip(ra.masks, rb.masks))
    assert any(not np.array_equal(x, y) for ra, rc in zip(a, c) for x, y in zip(ra.masks, rc.masks))
    # the first masks do not depend on how many are drawn
    d = sample_mod.sample_masks(model, cats, cats[:1], 2, _settings(), 16, progress=False)
    assert all(np.array_equal(x, y) for x, y in zip(d[0].masks, a[0].masks[:2]))


def test_sample_cli_writes_binary_named_masks(trained, tmp_path):
    out = tmp_path / "masks"
    rc = sample_mod.main(["--ckpt", str(trained["run"]), "--out", str(out), "--n_per_category", "3",
                          "--size", "40", "--seed", "1", "--no_progress", "--categories", "inclusion,Sc"])
    assert rc == 0
    files = sorted(p.name for p in out.glob("*.png"))
    assert files == [f"In_gen_000{i}.png" for i in (1, 2, 3)] + [f"Sc_gen_000{i}.png" for i in (1, 2, 3)]
    for name in files:
        arr = np.asarray(Image.open(out / name))
        assert arr.shape == (40, 40) and arr.dtype == np.uint8
        assert set(np.unique(arr).tolist()) <= {0, 255} and (arr == 255).any()
        assert category_for_file(name).prefix == name[:2]
    assert (out / sample_mod.MANIFEST).is_file()
    # an existing output is not silently mixed with a new run
    with pytest.raises(UserError, match="--overwrite"):
        sample_mod.main(["--ckpt", str(trained["run"]), "--out", str(out), "--n_per_category", "2",
                         "--no_progress", "--categories", "In"])
    assert sample_mod.main(["--ckpt", str(trained["run"]), "--out", str(out), "--n_per_category", "2",
                            "--no_progress", "--categories", "In", "--overwrite"]) == 0
    assert sorted(p.name for p in out.glob("In_*.png")) == ["In_gen_0001.png", "In_gen_0002.png"]


def test_sample_stopped_while_writing_is_resumed_by_the_same_command(trained, tmp_path, monkeypatch):
    """A full disk after the first mask: one line; once space is freed the same command (no --overwrite)
    replaces the stopped run's masks and writes the manifest; a finished folder is still refused."""
    import errno
    import os

    out = tmp_path / "masks"
    argv = ["--ckpt", str(trained["run"]), "--out", str(out), "--n_per_category", "2", "--no_progress",
            "--categories", "In"]
    real, calls = sample_mod.write_png_atomic, []

    def fills_up(image, path):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(image, path)
    monkeypatch.setattr(sample_mod, "write_png_atomic", fills_up)
    with pytest.raises(OSError, match="No space left"):
        sample_mod.main(argv)
    assert [p.name for p in out.glob("*.png")] == ["In_gen_0001.png"] and not (out / sample_mod.MANIFEST).exists()
    monkeypatch.setattr(sample_mod, "write_png_atomic", real)
    assert sample_mod.main(argv) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["In_gen_0001.png", "In_gen_0002.png"]
    assert (out / sample_mod.MANIFEST).is_file() and not (out / sample_mod.UNFINISHED).exists()
    with pytest.raises(UserError, match="--overwrite"):
        sample_mod.main(argv)


def test_never_empty_even_when_threshold_rejects_everything(trained):
    model, cats = model_from_checkpoint(load_checkpoint(trained["run"]))
    res = sample_mod.sample_masks(model, cats, cats[2:], 3, _settings(threshold=0.999, min_area=0.2,
                                                                      max_retries=1), 16, progress=False)
    assert len(res[0].masks) == 3
    assert all(m.any() and m.shape == (32, 32) for m in res[0].masks)
    assert res[0].redraws >= 1


def test_unknown_category_is_one_line_error(trained):
    _, cats = model_from_checkpoint(load_checkpoint(trained["run"]))
    with pytest.raises(UserError, match="unknown category 'cracks'"):
        sample_mod.select_categories(cats, ["cracks"])


def test_bad_training_input(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no mask files"):
        train(tiny_config(), empty, tmp_path / "r1", progress=False)

    grey = make_masks(tmp_path / "grey")
    arr = np.zeros((32, 32), np.uint8)
    arr[4:10, 4:10] = 128
    Image.fromarray(arr).save(grey / "In_99.png")
    with pytest.raises(UserError, match="not binary"):
        train(tiny_config(), grey, tmp_path / "r2", progress=False)

    odd = make_masks(tmp_path / "odd")
    _save(np.ones((32, 32), bool), odd / "Cr_1.png")
    with pytest.raises(UserError, match="unknown category prefix 'Cr'"):
        train(tiny_config(), odd, tmp_path / "r3", progress=False)

    with pytest.raises(UserError, match="unknown key 'model.width'"):
        load_config(None, ["model.width=3"])


def _cli_error(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: main(argv))
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    return lines[0]


def test_cli_prints_one_line_error(tmp_path, trained, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _cli_error(train_main, ["--data_root", str(empty), "--out", str(tmp_path / "run")], capsys)
    assert "no mask files" in line
    line = _cli_error(sample_mod.main, ["--ckpt", str(trained["run"]), "--out", str(tmp_path / "m"),
                                        "--categories", "cracks", "--no_progress"], capsys)
    assert "unknown category 'cracks'" in line
    line = _cli_error(sample_mod.main, ["--ckpt", str(empty), "--out", str(tmp_path / "m")], capsys)
    assert "no maskgen checkpoint in this folder" in line and str(empty) in line


def test_binary_targets_and_min_snr_weighting():
    from maskgen.data import to_training_tensor

    m = np.zeros((32, 32), bool)
    m[:, 10] = True                                   # 1-pixel line: grey after area-averaging
    soft = to_training_tensor([m], 16)
    hard = to_training_tensor([m], 16, binarize=0.4)
    assert set(soft.unique().tolist()) == {-1.0, 0.0}      # half-covered pixels are grey
    assert set(hard.unique().tolist()) == {-1.0, 1.0}
    cfg = tiny_config()
    torch.manual_seed(0)
    model = build_model(cfg, 3)
    x = hard.repeat(4, 1, 1, 1)
    y = torch.zeros(4, dtype=torch.long)
    plain = model.loss(x, y, generator=torch.Generator().manual_seed(1))
    weighted = model.loss(x, y, generator=torch.Generator().manual_seed(1), min_snr_gamma=5.0)
    assert torch.isfinite(weighted) and weighted < plain   # min(SNR, 5) / (SNR + 1) < 1


@pytest.mark.parametrize("extra,expect", [
    (["--guidance", "nan"], "--guidance must be a finite number"),
    (["--guidance", "inf"], "--guidance must be a finite number"),
    (["--steps", "5000"], "exceeds the 1000 diffusion timesteps"),
    (["--eta", "-1"], "--eta must be >= 0"),
    (["--n_per_category", "0"], "--n_per_category must be at least 1"),
])
def test_sample_cli_refuses_garbage_values(tmp_path, trained, capsys, extra, expect):
    out = tmp_path / "m"
    line = _cli_error(sample_mod.main, ["--ckpt", str(trained["run"]), "--out", str(out), "--no_progress",
                                        *extra], capsys)
    assert expect in line and not out.exists()


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1e-3"])
def test_train_refuses_a_learning_rate_that_is_not_a_positive_number(tmp_path, capsys, value):
    data = make_masks(tmp_path / "data")
    line = _cli_error(train_main, ["--data_root", str(data), "--out", str(tmp_path / "run"), f"--lr={value}"],
                      capsys)
    assert "train.lr must be a finite number > 0" in line and not (tmp_path / "run").exists()


def test_best_level_recovers_the_threshold_that_made_the_real_masks():
    from maskgen.calibrate import GRID, areas_at, best_level

    rng = np.random.default_rng(0)
    # soft outputs: radial bumps of random height/width; the decoded area shrinks as the level rises
    yy, xx = np.mgrid[-8:8, -8:8] / 8.0
    soft = np.stack([np.clip(h - (xx ** 2 + yy ** 2) / w, -1, 1) for h, w in
                     zip(rng.uniform(0.3, 1.0, 60), rng.uniform(0.3, 1.0, 60))]).astype(np.float32)
    s = sample_mod.SampleSettings(size=32, min_area=0.0)
    areas = areas_at(soft, s, GRID)
    assert np.all(np.diff(np.nan_to_num(areas), axis=1) <= 0)       # higher level, smaller mask
    real = areas[:, GRID.index(0.65)]                                # "real" masks made at 0.65
    level, score = best_level(real[np.isfinite(real)], areas, GRID)
    assert level == 0.65 and score == 0.0
    level, _ = best_level(areas[:, GRID.index(0.4)], areas, GRID)
    assert level == 0.4


def test_calibrate_writes_levels_that_sample_uses_unless_a_threshold_is_given(trained, tmp_path, capsys):
    import json

    from maskgen import calibrate as cal_mod
    from maskgen.calibration import CALIBRATION

    run = tmp_path / "run"
    import shutil
    shutil.copytree(trained["run"], run)
    assert cal_mod.main(["--ckpt", str(run), "--data_root", str(trained["data"]), "--n_per_category", "12",
                         "--no_progress"]) == 0
    cal = json.loads((run / CALIBRATION).read_text())
    assert set(cal["thresholds"]) == {"In", "Pa", "Sc"} and all(v in cal_mod.GRID for v in cal["thresholds"].values())
    assert cal["seed"] == 1000 and cal["step"] == load_checkpoint(run)["step"]
    out = tmp_path / "m"
    assert sample_mod.main(["--ckpt", str(run), "--out", str(out), "--n_per_category", "2", "--no_progress"]) == 0
    manifest = json.loads((out / sample_mod.MANIFEST).read_text())
    assert manifest["calibration"] == str(run / CALIBRATION)
    assert manifest["settings"]["thresholds"] == cal["thresholds"]
    # an explicit threshold (flag or --set) wins over the calibration; so does --calibration none
    for extra in (["--threshold", "0.5"], ["--set", "sample.threshold=0.5"], ["--calibration", "none"]):
        assert sample_mod.main(["--ckpt", str(run), "--out", str(out), "--n_per_category", "1", "--no_progress",
                                "--overwrite", *extra]) == 0
        manifest = json.loads((out / sample_mod.MANIFEST).read_text())
        assert manifest["calibration"] is None and manifest["settings"]["thresholds"] == {}
    # levels fitted with other sampling settings are refused, not silently applied
    line = _cli_error(sample_mod.main, ["--ckpt", str(run), "--out", str(tmp_path / "e"), "--no_progress",
                                        "--eta", "0.5"], capsys)
    assert "fitted with other settings" in line and "eta 0.0 vs 0.5" in line and not (tmp_path / "e").exists()
    # levels fitted on an earlier step of the model (trained further since) are refused
    cal_stale = dict(cal, step=cal["step"] - 1)
    (run / CALIBRATION).write_text(json.dumps(cal_stale))
    line = _cli_error(sample_mod.main, ["--ckpt", str(run), "--out", str(tmp_path / "s"), "--no_progress"], capsys)
    assert "trained further since" in line and not (tmp_path / "s").exists()
    # a damaged calibration file is a one-line error naming it
    (run / CALIBRATION).write_text("{not json")
    line = _cli_error(sample_mod.main, ["--ckpt", str(run), "--out", str(tmp_path / "n"), "--no_progress"], capsys)
    assert CALIBRATION in line and "maskgen.calibrate" in line and not (tmp_path / "n").exists()
