"""training.divergence: a run whose loss leaves its level warns once, naming the checkpoint saved before the rise."""
from __future__ import annotations

from pathlib import Path

import pytest
from train_helpers import run_main, tiny_train_config

from training import trainer as trainer_module
from training.divergence import DivergenceWatch
from training.run_folder import Saved

# window means of a 96 px run that blew up at iteration 3049 (vpred96s_729_t1, logged every 25 iterations)
LEVEL = [0.668, 0.414, 0.274, 0.233, 0.198, 0.198, 0.19, 0.176, 0.159, 0.168, 0.177, 0.157, 0.181, 0.133, 0.17,
         0.199, 0.129, 0.16]
BLOWN = [0.627, 1.67, 0.877, 0.941, 0.823, 0.856]


def feed(watch: DivergenceWatch, losses: list[float], every: int = 25) -> list[int]:
    return [every * (i + 1) for i, loss in enumerate(losses) if watch.update(every * (i + 1), loss, every * i)]


def test_the_watch_fires_once_after_three_windows_above_three_times_the_best():
    watch = DivergenceWatch()
    assert feed(watch, LEVEL + BLOWN) == [25 * (len(LEVEL) + 3)]           # the third window up, and only then
    assert watch.rose_at == 25 * len(LEVEL) and watch.best == 0.129 and watch.best_iteration == 25 * 17
    line = watch.message(0.877, Saved(450, Path("RUN/checkpoints/ckpt_00000450.safetensors"),
                                      Path("RUN/checkpoints/state_00000450.json")))
    assert "\n" not in line and "rose after iteration 450" in line and "6.8x its best 0.129" in line
    assert "ckpt_00000450.safetensors" in line and "python -m training.rewind RUN --to 450" in line
    assert "grad_clip" in watch.message(0.877, None) and "rewind" not in watch.message(0.877, None)


@pytest.mark.parametrize("losses", [
    LEVEL,                                              # a run that falls and settles
    LEVEL + [0.627, 1.67, 0.16, 0.5, 0.6, 0.17],        # spikes that come back within the patience
    [float("nan"), 0.5, 0.4, 0.45],                     # a window that is not a number is passed over
])
def test_the_watch_stays_quiet_while_the_loss_keeps_its_level(losses):
    assert feed(DivergenceWatch(), losses) == []


def test_a_training_run_whose_loss_leaves_its_level_warns_once_with_the_checkpoint_before_it(
        tmp_path, monkeypatch, capsys):
    real = trainer_module.Trainer.compute_loss

    def blowing_up(self, batch, gen):
        loss = real(self, batch, gen)
        return loss * 1000 if self.iteration >= 4 else loss  # from the 5th iteration on (Adam steps unchanged)

    monkeypatch.setattr(trainer_module.Trainer, "compute_loss", blowing_up)
    config = tiny_train_config(tmp_path)                     # logs every iteration
    run_main(config, tmp_path / "out", "up", "--total_iters", "9", "--save_every_iters", "2",
             "--set", "train.keep_checkpoints=1")
    lines = [line for line in capsys.readouterr().err.splitlines() if "the loss rose" in line]
    assert len(lines) == 1, lines
    assert "rose after iteration 4" in lines[0] and "up/checkpoints/ckpt_00000004.safetensors" in lines[0]
    kept = sorted(p.name for p in (tmp_path / "out" / "up" / "checkpoints").glob("ckpt_*.safetensors"))
    assert kept == ["ckpt_00000004.safetensors", "ckpt_00000009.safetensors"]  # the one named is spared pruning


def test_a_resumed_run_replays_its_log_so_a_blow_up_across_the_stop_is_still_told(tmp_path, monkeypatch, capsys):
    real = trainer_module.Trainer.compute_loss

    def blowing_up(self, batch, gen):
        loss = real(self, batch, gen)
        return loss * 1000 if self.iteration >= 4 else loss

    monkeypatch.setattr(trainer_module.Trainer, "compute_loss", blowing_up)
    config = tiny_train_config(tmp_path)

    def warnings_of(total: int) -> list[str]:
        run_main(config, tmp_path / "out", "up", "--total_iters", str(total), "--save_every_iters", "2")
        return [line for line in capsys.readouterr().err.splitlines() if "the loss rose" in line]

    assert warnings_of(6) == []           # stopped two windows into the rise: not yet three
    told = warnings_of(8)                 # the third window up is the first one after the resume
    assert len(told) == 1 and "rose after iteration 4" in told[0]
    assert "up/checkpoints/ckpt_00000004.safetensors" in told[0]  # from the folder, not the checkpoint resumed
    again = warnings_of(8)                # started again after the warning (nothing left to train): told again
    assert len(again) == 1 and "ckpt_00000004.safetensors" in again[0]


def test_replay_reads_only_the_loss_windows_of_a_log():
    watch = DivergenceWatch()
    rows = [{"iteration": 25 * (i + 1), "loss": loss} for i, loss in enumerate(LEVEL + BLOWN[:2])]
    rows[3:3] = [{"iteration": 80, "fid": 12.0}, {"iteration": 81, "loss": None}, {"iteration": 82, "loss": "x"}]
    assert not watch.replay(rows) and watch.above == 2 and watch.rose_at == 25 * len(LEVEL)
    assert watch.replay([{"iteration": 25 * (len(LEVEL) + 3), "loss": BLOWN[2]}])
