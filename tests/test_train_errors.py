"""Bad input ends with one line naming the problem: weights, checkpoints, data, NaN losses."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from train_helpers import REPO, run_main, tiny_train_config, write_release

from ldm.checkpoint import CheckpointError
from runtime.errors import UserError
from training import trainer as trainer_module
from training.options import RELEASE_URL


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return tiny_train_config(tmp_path_factory.mktemp("cfg"))


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


def test_missing_release_weights_say_where_to_get_them(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no model_sem/ here
    with pytest.raises(UserError) as err:
        run_main(config, tmp_path / "out", "x", "--ckpt", "model_sem/sem_diffusion_pytorch_model.bin")
    msg = one_line(err.value)
    assert "model_sem/sem_diffusion_pytorch_model.bin" in msg and RELEASE_URL in msg


def test_ckpt_of_another_architecture_is_refused(config, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text((REPO / "configs" / "demo.yaml").read_text())
    wrong = write_release(tmp_path / "demo_release.bin", config_path=other)
    with pytest.raises(CheckpointError) as err:
        run_main(config, tmp_path / "out", "x", "--ckpt", str(wrong))
    msg = one_line(err.value)
    assert "does not fit the configured architecture" in msg and "demo_release.bin" in msg


def test_nan_loss_stops_naming_iteration_and_last_checkpoint(config, tmp_path, monkeypatch):
    real = trainer_module.Trainer.compute_loss

    def poisoned(self, batch, gen):
        loss = real(self, batch, gen)
        return loss * float("nan") if self.iteration == 2 else loss  # the 3rd iteration

    monkeypatch.setattr(trainer_module.Trainer, "compute_loss", poisoned)
    with pytest.raises(UserError) as err:
        run_main(config, tmp_path / "out", "nan", "--total_iters", "5", "--save_every_iters", "2")
    msg = one_line(err.value)
    assert "loss is nan at iteration 3" in msg
    assert "ckpt_00000002.safetensors (iteration 2)" in msg
    # the stored checkpoint is intact and training resumes from it
    monkeypatch.setattr(trainer_module.Trainer, "compute_loss", real)
    run_main(config, tmp_path / "out", "nan", "--total_iters", "3", "--save_every_iters", "2")
    assert (tmp_path / "out" / "nan" / "checkpoints" / "ckpt_00000003.safetensors").is_file()


def test_infinite_gradient_stops_too(config, tmp_path, monkeypatch):
    real = trainer_module.Trainer.compute_loss

    def exploding(self, batch, gen):
        loss = real(self, batch, gen)
        p = self.params[0]
        return loss + (p * 0).sum() * float("inf") if self.iteration == 0 else loss

    monkeypatch.setattr(trainer_module.Trainer, "compute_loss", exploding)
    with pytest.raises(UserError) as err:
        run_main(config, tmp_path / "out", "inf", "--total_iters", "2")
    assert "at iteration 1" in one_line(err.value) and "no checkpoint saved yet" in str(err.value)


def _pairs(root: Path, n: int = 2, size: int = 32) -> Path:
    (root / "Source Images").mkdir(parents=True)
    (root / "Ground truth").mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, n + 1):
        image = Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8), "L")
        image.save(root / "Source Images" / f"In_{i}.bmp")
        mask = np.zeros((size, size), np.uint8)
        mask[4:12, 4:12] = 255
        Image.fromarray(mask, "L").save(root / "Ground truth" / f"In_{i}.png")
    return root


def test_dataset_problems_reach_main_as_one_line(config, tmp_path):
    root = _pairs(tmp_path / "data")
    (root / "Ground truth" / "In_2.png").unlink()
    with pytest.raises(UserError) as err:
        run_main(config, tmp_path / "out", "d1", "--DATA_ROOT", str(root))
    assert "In_2.bmp" in one_line(err.value) and "without a mask" in str(err.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError) as err:
        run_main(config, tmp_path / "out", "d2", "--DATA_ROOT", str(empty))
    one_line(err.value)


def test_error_raised_inside_a_loader_worker_stays_one_line(config, tmp_path):
    root = _pairs(tmp_path / "data", n=3)
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 255  # a colour mask (R != G): refused when the sample is read, i.e. in the worker
    Image.fromarray(rgb, "RGB").save(root / "Ground truth" / "In_2.png")
    with pytest.raises(UserError) as err:
        run_main(config, tmp_path / "out", "w", "--DATA_ROOT", str(root), "--workers", "1", "--total_iters", "3")
    msg = one_line(err.value)
    assert "In_2.png" in msg and "colour mask" in msg


def test_cli_prints_one_error_line_and_exits_2(config, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), "--yaml_file", str(config), "--OUTPUT_ROOT",
                           str(tmp_path), "--name", "cli", "--DATA_ROOT", str(tmp_path / "nowhere")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"error: --DATA_ROOT {tmp_path / 'nowhere'}: folder not found"], proc.stderr


def test_bad_options_are_user_errors(config, tmp_path):
    with pytest.raises(UserError, match="batch_size"):
        run_main(config, tmp_path / "out", "o", "--batch_size", "0")
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text().replace("trainable: grounding", "trainable: grounding\n  learning_rate: 1"))
    with pytest.raises(UserError, match="unknown key .train.learning_rate.; did you mean .train.base_learning_rate"):
        run_main(bad, tmp_path / "out", "o")
    with pytest.raises(UserError, match="would train nothing"):
        run_main(config, tmp_path / "out", "o", "--ckpt", "none")
