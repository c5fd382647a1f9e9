"""One writer per run folder (runtime.lock): every command that writes a run or output folder refuses a
second writer with one line naming the holder's pid, and takes over the lock of a dead process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_maskgen_pipeline import make_masks, tiny_config
from train_helpers import run_main, tiny_train_config

from runtime.errors import UserError
from runtime.lock import LOCK_NAME, FolderLock, locked

REPO = Path(__file__).resolve().parents[1]
HOLD = ("import sys, time; from runtime.lock import FolderLock; "
        "[FolderLock(p, create=True).acquire() for p in sys.argv[1:]]; print('held', flush=True); time.sleep(600)")


@pytest.fixture
def holder(tmp_path):
    """Start a process that holds the locks of the given folders; yields a function that starts it."""
    procs: list[subprocess.Popen] = []

    def hold(*folders: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, *map(str, folders)], cwd=REPO, stdout=subprocess.PIPE,
                                text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


def refused(proc: subprocess.Popen, call) -> str:
    with pytest.raises(UserError) as err:
        call()
    text = str(err.value)
    assert f"being written by another run (pid {proc.pid} " in text and "\n" not in text, text
    return text


def test_a_dead_holder_is_taken_over_and_a_live_one_refused(tmp_path, holder):
    proc = holder(tmp_path / "a")
    with pytest.raises(UserError, match=rf"pid {proc.pid} .*{LOCK_NAME}.*choose another output folder"):
        FolderLock(tmp_path / "a").acquire()
    proc.kill()
    proc.wait()
    assert (tmp_path / "a" / LOCK_NAME).read_text().startswith(f"pid {proc.pid}")  # left by a dead process
    with locked(tmp_path / "a"):
        with pytest.raises(UserError, match="being written by another run"):  # in-process too
            FolderLock(tmp_path / "a").acquire()
    assert not (tmp_path / "a" / LOCK_NAME).exists()


# a holder that forks a child (as a DataLoader forks its workers), prints both pids and exits; the child keeps the lock
ORPHAN = ("import os, sys, time; from runtime.lock import FolderLock; FolderLock(sys.argv[1], create=True).acquire()\n"
          "child = os.fork()\n"
          "if child == 0:\n    os.close(1); os.close(2); time.sleep(600); os._exit(0)\n"
          "print(os.getpid(), child, flush=True); os._exit(0)")


def test_a_lock_kept_by_the_child_of_an_ended_holder_says_so(tmp_path):
    """A data-loader worker forked by a killed trainer keeps the lock a few seconds: the refusal says the named
    holder has ended instead of pointing at a process that is not there."""
    proc = subprocess.run([sys.executable, "-c", ORPHAN, str(tmp_path / "run")], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    parent, child = map(int, proc.stdout.split())
    try:
        with pytest.raises(UserError, match=rf"pid {parent} on .*, which has ended; a process it started still holds"):
            FolderLock(tmp_path / "run").acquire()
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_symlinked_lock_file_is_not_followed(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_NAME).symlink_to(outside)
    with pytest.raises(UserError, match="cannot write there"):
        FolderLock(tmp_path / "run").acquire()
    assert outside.read_text() == "keep me"


def test_training_refuses_a_second_writer(tmp_path, holder):
    config = tiny_train_config(tmp_path)
    proc = holder(tmp_path / "runs" / "run")
    assert "choose another --name" in refused(proc, lambda: run_main(config, tmp_path / "runs", "run"))
    assert not (tmp_path / "runs" / "run" / "checkpoints").exists()


def test_mask_producer_refuses_a_second_writer(tmp_path, holder):
    from maskgen import sample as mg_sample
    from maskgen.train import train

    data = make_masks(tmp_path / "data", per_category=2)
    train(tiny_config(epochs=1), data, tmp_path / "done", progress=False)
    proc = holder(tmp_path / "run", tmp_path / "masks")
    refused(proc, lambda: train(tiny_config(epochs=1), data, tmp_path / "run", progress=False))
    assert not (tmp_path / "run" / "checkpoints").exists()
    refused(proc, lambda: mg_sample.main(["--ckpt", str(tmp_path / "done"), "--out", str(tmp_path / "masks"),
                                          "--n_per_category", "1", "--no_progress"]))
    assert not list((tmp_path / "masks").glob("*.png"))


def test_detector_predictions_and_filter_refuse_a_second_writer(tmp_path, holder):
    from evaluation.detector.predict import write_maps
    from evaluation.detector.train import train_detector
    from evaluation.sample_filter import filter_samples

    proc = holder(tmp_path / "det", tmp_path / "maps", tmp_path / "kept")
    from evaluation.detector.train import DEFAULT_CONFIG
    from runtime.configs import load_config

    cfg = load_config(DEFAULT_CONFIG, DEFAULT_CONFIG, [])
    refused(proc, lambda: train_detector(cfg, [object()], tmp_path / "det"))
    refused(proc, lambda: write_maps(None, [Path("x.png")], tmp_path / "maps"))
    refused(proc, lambda: filter_samples(tmp_path / "gen", tmp_path / "kept", lambda paths: []))
    assert sorted(p.name for p in (tmp_path / "det").iterdir()) == [LOCK_NAME]


def test_study_refuses_a_second_writer(tmp_path, holder):
    from test_study import write_tiny_study

    from evaluation.study import main as study_main

    config = write_tiny_study(tmp_path)
    proc = holder(tmp_path / "out")
    refused(proc, lambda: study_main(["--config", str(config), "--no_progress"]))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [LOCK_NAME]
