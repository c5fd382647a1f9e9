"""Training refuses bad or changed settings before it trains, with one line: options that do not fit
the model, a resume that changed what the run is, config errors, an unwritable or full output folder."""
from __future__ import annotations

import errno
import json
import os
import shutil

import pytest
import torch
from train_helpers import run_main, tiny_train_config

from runtime.errors import UserError
from training import trainer as trainer_module


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return tiny_train_config(tmp_path_factory.mktemp("cfg"))


@pytest.fixture(scope="module")
def trained(config, tmp_path_factory):
    """A finished two-iteration run to resume."""
    out = tmp_path_factory.mktemp("runs")
    assert run_main(config, out, "run") == 0
    return out / "run"


def _error(*args) -> str:
    with pytest.raises(UserError) as err:
        run_main(*args)
    text = str(err.value)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize("extra,expect", [
    (["--set", "train.sample_steps=5000"], "sample_steps 5000 exceeds the schedule's 1000 timesteps"),
    (["--set", "train.guidance_scale=.nan"], "guidance_scale must be a finite number"),
    (["--set", "data.image_size=64"], "data.image_size 64 does not fit the model"),
    (["--set", "model.params.grounding_tokenizer.params.resize_input=33"], "resize_input must be a multiple"),
    (["--set", "model.params.num_heads=[1]"], "bad params for ldm.modules.unet.UNetModel"),
], ids=["sample_steps", "guidance_nan", "image_size", "constructor_valueerror", "constructor_typeerror"])
def test_options_are_checked_before_the_first_step(config, tmp_path, extra, expect):
    msg = _error(config, tmp_path, "x", *extra)
    assert expect in msg
    assert not (tmp_path / "x" / "checkpoints").exists() or not any((tmp_path / "x" / "checkpoints").iterdir())


def test_missing_interpolation_is_one_line(config, tmp_path):
    bad = tmp_path / "interp.yaml"
    bad.write_text(config.read_text().replace("seed: 7", "seed: ${nowhere.seed}"))
    assert "interpolation" in _error(bad, tmp_path, "x")


@pytest.mark.parametrize("extra,key", [
    (["--seed", "8"], "train.seed 7 -> 8"),
    (["--base_learning_rate", "0.002"], "train.base_learning_rate 0.001 -> 0.002"),
    (["--set", "data.procedural.seed=1"], "data.procedural"),
], ids=["seed", "learning_rate", "data"])
def test_resume_with_changed_settings_is_refused_or_recorded(trained, tmp_path, config, extra, key):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = (run / "config.yaml").read_text()
    msg = _error(config, tmp_path, "run", *extra)
    assert key in msg and "--allow_config_change" in msg
    assert (run / "config.yaml").read_text() == before and not (run / "config_changes.jsonl").exists()

    assert run_main(config, tmp_path, "run", *extra, "--allow_config_change") == 0
    lines = (run / "config_changes.jsonl").read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["iteration"] == 2 and key.split(" ")[0] in record["changes"]


def test_resume_with_the_same_settings_records_nothing(trained, tmp_path, config):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    assert run_main(config, tmp_path, "run") == 0
    assert not (run / "config_changes.jsonl").exists()


def test_unwritable_output_folder_is_one_line(config, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert "cannot write the run folder" in _error(config, blocker, "x")

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "ro" / "x" / "config.yaml"))

    monkeypatch.setattr(trainer_module, "write_text_atomic", read_only)
    msg = _error(config, tmp_path / "ro", "x")
    assert "Read-only file system" in msg and "--OUTPUT_ROOT" in msg


@pytest.mark.parametrize("err,fix", [(errno.ENOSPC, "free disk space"),
                                     (errno.EFBIG, "raise the file-size limit (ulimit -f)")])
def test_full_disk_or_file_size_limit_while_saving_is_one_line(config, tmp_path, monkeypatch, err, fix):
    def full(*args, **kwargs):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(trainer_module.RunCheckpoints, "save", full)
    msg = _error(config, tmp_path, "full")
    assert msg.startswith("cannot write the run folder") and os.strerror(err) in msg, msg
    assert msg.endswith(f"{fix}, then rerun the same command to resume"), msg


@pytest.mark.parametrize("kind", ["metadata", "sidecar", "config_dict"])
def test_malformed_embedded_config_is_one_line(tmp_path, kind):
    from safetensors.torch import save_file

    from ldm.checkpoint import read_checkpoint

    if kind == "config_dict":
        path = tmp_path / "bad.pth"
        torch.save({"model": {"w": torch.zeros(1)}, "config_dict": {"_content": 5, "_metadata": 3}}, path)
    else:
        path = tmp_path / "bad.safetensors"
        meta = {"format": "deffiller"}
        if kind == "metadata":
            meta["config"] = "model: [unclosed"
        else:
            (tmp_path / "bad.yaml").write_text("model:\n  target: x\n   params: {\n")
        save_file({"model.w": torch.zeros(1)}, str(path), metadata=meta)
    with pytest.raises(UserError) as err:
        read_checkpoint(path)
    assert "\n" not in str(err.value) and str(path.name if kind != "sidecar" else "bad.yaml") in str(err.value)


def test_no_progress_hides_the_bar_and_is_not_a_run_setting(config, tmp_path, capsys):
    assert run_main(config, tmp_path, "bar") == 0
    assert "training:" in capsys.readouterr().err
    assert run_main(config, tmp_path, "quiet", "--no_progress") == 0
    captured = capsys.readouterr()
    assert "training:" not in captured.err
    # the flag is not stored with the run: resuming without it is the same run, not a changed setting
    assert "no_progress:" not in (tmp_path / "quiet" / "config.yaml").read_text()
    assert run_main(config, tmp_path, "quiet") == 0
    assert not (tmp_path / "quiet" / "config_changes.jsonl").exists()
