"""training.rewind: an earlier checkpoint becomes the run's latest; the run continues from it exactly."""
from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file
from train_helpers import run_main, tiny_train_config

from runtime.errors import UserError, run_cli
from runtime.lock import locked
from training import rewind as rewind_cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run of 6 iterations, checkpoints every 2 (the bad-input test runs first: the other rewinds it)."""
    root = tmp_path_factory.mktemp("rewind")
    config = tiny_train_config(root)
    run_main(config, root / "out", "run", "--total_iters", "6", "--save_every_iters", "2")
    return config, root / "out" / "run"


def one_line(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: rewind_cli.main(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_bad_input_is_one_line(trained, tmp_path, capsys):
    _, run = trained
    assert "no complete checkpoint of iteration 3; it has 3 checkpoints: 2, 4, 6" in one_line(
        [str(run), "--to", "3"], capsys)
    assert "no such run folder" in one_line([str(tmp_path / "missing"), "--to", "2"], capsys)
    (tmp_path / "empty").mkdir()
    assert "no complete checkpoint in it" in one_line([str(tmp_path / "empty"), "--to", "2"], capsys)
    with locked(run):  # a training still writing the run
        assert "stop the training that is writing it first" in one_line([str(run), "--to", "2"], capsys)
    assert json.loads((run / "latest.json").read_text())["iteration"] == 6  # nothing was touched


def test_a_rewound_run_continues_from_the_checkpoint_and_reaches_the_same_weights(trained, capsys):
    config, run = trained
    ckpts = run / "checkpoints"
    final = load_file(str(ckpts / "ckpt_00000006.safetensors"))
    assert rewind_cli.main([str(run), "--to", "2"]) == 0
    assert "latest is now iteration 2; checkpoints 4, 6 moved to" in capsys.readouterr().out
    assert json.loads((run / "latest.json").read_text())["iteration"] == 2
    assert (ckpts / "latest.safetensors").resolve().name == "ckpt_00000002.safetensors"
    assert sorted(p.name for p in (ckpts / "after_00000002").iterdir()) == sorted(
        f"{kind}_{i:08d}.{ext}" for i in (4, 6)
        for kind, ext in (("ckpt", "safetensors"), ("ckpt", "yaml"), ("state", "json"), ("state", "safetensors")))
    assert not list(ckpts.glob("*_00000004.*")) and not list(ckpts.glob("*_00000006.*"))
    assert max(json.loads(line)["iteration"] for line in (run / "metrics.jsonl").read_text().splitlines()) == 2
    with pytest.raises(UserError, match=r"an earlier rewind moved it to checkpoints/after_00000002: move its files"):
        rewind_cli.rewind(run, 6)

    run_main(config, run.parent, "run", "--total_iters", "6", "--save_every_iters", "2")  # the run's command
    again = load_file(str(ckpts / "ckpt_00000006.safetensors"))
    assert again.keys() == final.keys() and all((again[k] == final[k]).all() for k in final)

    aside = ckpts / "after_00000004"  # a rewind killed after moving one file: run again, it finishes in one folder
    aside.mkdir()
    (ckpts / "state_00000006.json").rename(aside / "state_00000006.json")
    assert rewind_cli.main([str(run), "--to", "4"]) == 0  # a second rewind keeps the first one's files
    assert len(list(aside.iterdir())) == 4 and not list(ckpts.glob("*_00000006.*"))
    assert (ckpts / "after_00000004" / "ckpt_00000006.safetensors").is_file()
    assert rewind_cli.main([str(run), "--to", "2"]) == 0
    assert sorted(p.name for p in ckpts.glob("after_*")) == ["after_00000002", "after_00000002_2", "after_00000004"]
