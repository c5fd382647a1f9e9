"""``torchrun --nproc_per_node=2 main.py``: DDP over gloo on CPU, rank 0 logs and saves."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from train_helpers import REPO, tiny_train_config

from training.checkpointing import load_state


def test_two_process_gloo_torchrun_completes(tmp_path):
    config = tiny_train_config(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "main.py"), "--yaml_file", str(config), "--OUTPUT_ROOT", str(tmp_path / "out"),
           "--name", "ddp", "--device", "cpu", "--total_iters", "2", "--save_every_iters", "1",
           "--disable_inference_in_training", "false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "out" / "ddp"
    assert json.loads((run / "latest.json").read_text())["iteration"] == 2
    state = load_state(run / "checkpoints" / "state_00000002.json")
    assert state["world_size"] == 2 and len(state["rng"]) == 2  # both ranks' RNG states were gathered
    assert not torch_equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [entry["iteration"] for entry in lines] == [1, 2]  # rank 0 only logs
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["iter_00000001.png", "iter_00000002.png"]
    assert proc.stdout.count("run ") == 1  # one summary line: rank 0 only prints


def torch_equal(a, b) -> bool:
    import torch
    return torch.equal(a, b)
