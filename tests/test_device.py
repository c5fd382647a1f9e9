"""One device choice (runtime/device.py) for every command: auto, cpu, cuda, cuda:N, mps; one line otherwise."""
from __future__ import annotations

import re

import pytest
import torch

from runtime.device import pick_device
from runtime.errors import UserError, run_cli


@pytest.mark.parametrize("gpus,arg,rank,world,expect", [
    (0, "auto", 0, "1", "cpu"),
    (0, None, 0, "1", "cpu"),
    (0, "cpu", 0, "1", "cpu"),
    (2, "auto", 1, "2", "cuda:1"),          # torchrun: each process takes its local GPU
    (2, "cuda", 0, "1", "cuda:0"),
    (2, "cuda:1", 0, "1", "cuda:1"),        # a single process honours the index
    (2, "CUDA:1", 1, "2", "cuda:1"),
    (0, "tpu", 0, "1", "unknown device; choose auto, cpu, cuda, cuda:N or mps"),
    (0, "cuda:x", 0, "1", "unknown device"),
    (0, "cuda", 0, "1", "CUDA is not available here"),
    (0, "cuda:0", 0, "1", "CUDA is not available here"),
    (1, "cuda:3", 0, "1", "this machine has 1 CUDA device(s)"),
])
def test_pick_device(monkeypatch, gpus, arg, rank, world, expect):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setenv("WORLD_SIZE", world)
    if ":" in expect and expect.startswith("cuda") or expect == "cpu":
        assert pick_device(arg, rank) == torch.device(expect)
    else:
        with pytest.raises(UserError, match=re.escape(expect)) as err:
            pick_device(arg, rank)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("tool", ["main", "maskgen.train", "maskgen.sample"])
def test_device_tpu_is_one_line_in_every_cli(tool, tmp_path, capsys):
    if tool == "main":
        import main
        fn, argv = main.main, ["--yaml_file", "configs/demo.yaml", "--OUTPUT_ROOT", str(tmp_path)]
    elif tool == "maskgen.train":
        from maskgen.train import main as fn
        argv = ["--data_root", str(tmp_path), "--out", str(tmp_path / "o")]
    else:
        from maskgen.sample import main as fn
        argv = ["--ckpt", str(tmp_path / "x.pt"), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as code:
        run_cli(lambda: fn([*argv, "--device", "tpu"]))
    assert code.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --device 'tpu': unknown device") and len(err.splitlines()) == 1, err
