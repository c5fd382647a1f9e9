"""A process killed while writing a checkpoint leaves the previous one loadable, and resume uses it."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal

import pytest
from train_helpers import make_trainer, tiny_train_config

from ldm.checkpoint import load_models
from training.checkpointing import RunCheckpoints, load_state


def _train_and_die(config, out, die_at_fsync):
    """Child: train 2 iterations saving after each; SIGKILL itself at the n-th fsync of the 2nd save."""
    import training.checkpointing as ck

    calls = {"n": 0}
    real_save = ck.RunCheckpoints.save

    def save(self, iteration, *args, **kwargs):
        if iteration == 2:
            real_fsync = os.fsync

            def fsync(fd):
                calls["n"] += 1
                if calls["n"] == die_at_fsync:
                    os.kill(os.getpid(), signal.SIGKILL)
                return real_fsync(fd)
            os.fsync = fsync
        return real_save(self, iteration, *args, **kwargs)

    ck.RunCheckpoints.save = save
    make_trainer(config, out, "killed", "--total_iters", "2", "--save_every_iters", "1").train()


@pytest.mark.parametrize("die_at_fsync, what", [(1, "while writing the new weights"),
                                                (3, "while writing the new training state's tensors"),
                                                (4, "while writing the new training state's JSON"),
                                                (6, "while moving the latest pointer")])
def test_kill_during_checkpoint_write_keeps_previous_checkpoint(tmp_path, die_at_fsync, what):
    config = tiny_train_config(tmp_path)
    child = mp.get_context("fork").Process(target=_train_and_die, args=(config, tmp_path, die_at_fsync))
    child.start()
    child.join(300)
    assert child.exitcode == -signal.SIGKILL, f"the child was not killed {what} (exit {child.exitcode})"

    run = tmp_path / "killed"
    pointer = json.loads((run / "latest.json").read_text())
    assert pointer["iteration"] == 1, what
    models = load_models(run / pointer["weights"])  # the previous checkpoint still loads strictly
    assert models.model is not None
    assert load_state(run / pointer["state"])["iteration"] == 1
    assert not (run / "checkpoints" / "ckpt_00000002.safetensors").exists() or die_at_fsync > 1

    # starting again removes the debris and resumes from iteration 1
    again = make_trainer(config, tmp_path, "killed", "--total_iters", "2", "--save_every_iters", "1")
    assert again.iteration == 1
    assert not list(run.glob("**/.*.tmp"))
    assert again.train() == 2
    assert json.loads((run / "latest.json").read_text())["iteration"] == 2


def test_unreadable_pointer_falls_back_to_newest_complete_checkpoint(tmp_path):
    config = tiny_train_config(tmp_path)
    make_trainer(config, tmp_path, "r", "--total_iters", "2", "--save_every_iters", "1").train()
    run = tmp_path / "r"
    (run / "latest.json").write_text("{not json")
    (run / "checkpoints" / "state_00000002.json").write_bytes(b"truncated")
    with pytest.warns(UserWarning):
        found = RunCheckpoints(run).latest()
    assert found is not None and found[0].iteration == 1
