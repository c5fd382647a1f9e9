"""SIGTERM/Ctrl-C to the whole process group (as ``timeout``, Slurm or a terminal send it) finishes the
current step, saves a checkpoint and exits cleanly, loader workers included."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from train_helpers import REPO, tiny_train_config

from training.checkpointing import load_state


def test_sigterm_to_process_group_saves_and_exits(tmp_path):
    config = tiny_train_config(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(REPO / "main.py"), "--yaml_file", str(config), "--OUTPUT_ROOT", str(tmp_path),
           "--name", "sig", "--total_iters", "100000", "--save_every_iters", "100000", "--workers", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    metrics = tmp_path / "sig" / "metrics.jsonl"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        os.killpg(proc.pid, signal.SIGTERM)  # main process and its loader worker
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err[-2000:]  # 128 + SIGTERM: a stop, not a finish
    assert "stopped at iteration" in err
    pointer = json.loads((tmp_path / "sig" / "latest.json").read_text())
    assert 2 <= pointer["iteration"] < 100000
    assert load_state(tmp_path / "sig" / pointer["state"])["iteration"] == pointer["iteration"]
