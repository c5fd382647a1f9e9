"""One run format for the three trainers (training.run_folder): safetensors weights, the training state as
safetensors + JSON, latest.json, metrics.jsonl; read back without unpickling; resumed exactly; legacy ``last.pt``
runs continued; a changed setting, a damaged state or another trainer's folder refused with one line."""
from __future__ import annotations

import contextlib
import json
import pickle
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from test_maskgen_pipeline import make_masks, tiny_config

from runtime.errors import UserError, run_cli
from training import tensor_tree
from training.run_folder import RunFolder
from training.state_file import read_state, write_state

RUN_FILES = {"latest.json", "metrics.jsonl", "config.yaml"}


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@contextlib.contextmanager
def no_pickle() -> Iterator[None]:
    """Any unpickling (torch.load included) inside the block fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "load", refuse)
        mp.setattr(pickle, "load", refuse)
        mp.setattr(pickle, "loads", refuse)
        yield


def _one_line(main, argv, capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: main(argv))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert exc.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _layout(run: Path, step: int) -> None:
    """The files of a run folder in the format, and no pickle among them."""
    names = {p.name for p in run.iterdir()}
    assert RUN_FILES <= names, names
    ckpt = run / "checkpoints"
    assert {p.name for p in ckpt.iterdir()} == {f"ckpt_{step:08d}.safetensors", f"state_{step:08d}.json",
                                                 f"state_{step:08d}.safetensors", "latest.safetensors"}
    assert (ckpt / "latest.safetensors").resolve() == (ckpt / f"ckpt_{step:08d}.safetensors").resolve()
    pointer = json.loads((run / "latest.json").read_text())
    assert pointer["iteration"] == step and pointer["weights"] == f"checkpoints/ckpt_{step:08d}.safetensors"
    assert not list(run.rglob("*.pt")) and not list(run.rglob("*.tmp"))
    for line in (run / "metrics.jsonl").read_text().splitlines():
        assert isinstance(json.loads(line)["iteration"], int)


# -- the state files --------------------------------------------------------------------------------------------
def test_a_training_state_round_trips_exactly_through_safetensors_and_json(tmp_path):
    p = torch.nn.Parameter(torch.randn(4, 3, 2, 2).to(memory_format=torch.channels_last))
    opt = torch.optim.AdamW([p], lr=1e-3, fused=True)
    p.grad = torch.ones_like(p)
    opt.step()
    base = torch.arange(6.0)
    state = {"opt": opt.state_dict(), "python": [3, list(range(5)), None], "nan": float("nan"), "inf": -float("inf"),
             "tiny": 0.1 + 0.2, "np": np.float64(0.5), "flag": True, "tuple": (1, "a", (2.0,)), "none": None,
             "shared": [base, base[:3]], "rng": torch.Generator().manual_seed(3).get_state(), "$tensor": 7}
    write_state(tmp_path / "s.json", {"format": "deffiller-train-state", **state})
    with no_pickle():
        back = read_state(tmp_path / "s.json", "fix")
    o, b = state["opt"], back["opt"]
    assert list(b["state"]) == [0] and b["param_groups"] == o["param_groups"]
    assert b["param_groups"][0]["betas"] == (0.9, 0.999)
    for key, value in o["state"][0].items():
        assert torch.equal(b["state"][0][key], value) and b["state"][0][key].stride() == value.stride(), key
    assert back["python"] == state["python"] and back["tuple"] == state["tuple"] and back["tiny"] == 0.1 + 0.2
    assert np.isnan(back["nan"]) and back["inf"] == -float("inf") and back["np"] == 0.5 and back["$tensor"] == 7
    assert torch.equal(back["shared"][1], base[:3]) and torch.equal(back["rng"], state["rng"])
    doc = json.loads((tmp_path / "s.json").read_text())  # plain JSON: no NaN literals
    assert "NaN" not in json.dumps(doc) and doc["tensors"] == "s.safetensors"
    with pytest.raises(TypeError, match="cannot store a set"):
        tensor_tree.split({"x": {1, 2}})


@pytest.mark.parametrize("damage", ["truncated json", "empty json", "other tensors", "missing tensors"])
def test_a_damaged_state_is_one_line_naming_the_file(tmp_path, damage):
    path = write_state(tmp_path / "state_00000001.json", {"format": "deffiller-train-state", "w": torch.ones(3)})
    tensors = tmp_path / "state_00000001.safetensors"
    if damage == "truncated json":
        path.write_text(path.read_text()[:20])
    elif damage == "empty json":
        path.write_text("")
    elif damage == "other tensors":
        write_state(tmp_path / "other.json", {"w": torch.ones(5)})
        tensors.write_bytes((tmp_path / "other.safetensors").read_bytes())
    else:
        tensors.unlink()
    with pytest.raises(UserError) as err:
        read_state(path, "move it away")
    assert "\n" not in str(err.value) and str(path) in str(err.value) and str(err.value).endswith("move it away")


def test_run_folder_refuses_an_unreadable_run_and_another_trainers_run(tmp_path):
    folder = RunFolder(tmp_path / "run", "maskgen", "deffiller-maskgen", keep=1, fix="use a new --out")
    folder.save(3, {"model": {"w": torch.ones(2)}}, {"a": 1}, {"x": 1})
    folder.save(5, {"model": {"w": torch.zeros(2)}}, {"a": 1}, {"x": 2})
    assert folder.complete_iterations() == [5]  # keep=1: the older checkpoint is gone
    saved, state, weights = folder.latest()
    assert (saved.iteration, state["x"], state["trainer"]) == (5, 2, "maskgen")
    assert weights.metadata["config"] == {"a": 1} and torch.equal(weights.sections["model"]["w"], torch.zeros(2))
    with pytest.raises(UserError, match="holds a maskgen run, not a detector run; use a new --out"):
        RunFolder(tmp_path / "run", "detector", "deffiller-detector", fix="use a new --out").latest()
    (folder.dir / "state_00000005.json").write_text("{half")
    with pytest.raises(UserError) as err:
        folder.latest()
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'run'}: no readable checkpoint to resume from")
    assert "state_00000005.json" in message and message.endswith("use a new --out")


# -- maskgen ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def masks(tmp_path_factory) -> Path:
    return make_masks(tmp_path_factory.mktemp("rf") / "masks")


@pytest.fixture(scope="module")
def maskgen_full(masks, tmp_path_factory) -> tuple[Path, dict]:
    from maskgen.train import train

    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("rf") / "full"
    return run, train(tiny_config(), masks, run, progress=False)


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_maskgen_writes_the_run_format_and_reads_it_without_unpickling(maskgen_full, tmp_path):
    from maskgen import sample
    from maskgen.checkpoint import load_checkpoint, resume_point

    run, summary = maskgen_full
    _layout(run, summary["step"])
    assert summary["checkpoint"] == str(run / "checkpoints" / f"ckpt_{summary['step']:08d}.safetensors")
    with no_pickle():
        ckpt = load_checkpoint(run)
        point = resume_point(run)
    assert ckpt["step"] == summary["step"] and ckpt["epoch"] == 2 and ckpt["categories"][0]["prefix"] == "In"
    assert point.state["step"] == summary["step"] and point.state["history"] == summary["history"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"iteration": h["step"], **h} for h in summary["history"]]
    for ckpt_arg in (run, run / "checkpoints" / "latest.safetensors", Path(summary["checkpoint"])):
        out = tmp_path / f"m{len(list(tmp_path.iterdir()))}"
        assert sample.main(["--ckpt", str(ckpt_arg), "--out", str(out), "--n_per_category", "1", "--no_progress",
                            "--categories", "In"]) == 0
        assert [p.name for p in out.glob("*.png")] == ["In_gen_0001.png"]


def test_maskgen_resumes_mid_epoch_bit_for_bit(maskgen_full, masks, tmp_path):
    from maskgen.checkpoint import load_checkpoint
    from maskgen.train import train

    run = tmp_path / "run"
    stopped = train(tiny_config(), masks, run, max_minutes=0.0, progress=False)
    assert stopped["stopped"] == "time limit" and stopped["step"] == 1
    _layout(run, 1)
    done = train(tiny_config(), masks, run, progress=False)
    full, resumed = load_checkpoint(maskgen_full[0]), load_checkpoint(run)
    assert done["step"] == resumed["step"] == full["step"]
    _same(resumed["model"], full["model"])
    _same(resumed["ema"], full["ema"])


def _legacy_maskgen(run: Path, dest: Path) -> Path:
    """A legacy checkpoints/last.pt holding the state of ``run``."""
    from maskgen.checkpoint import LEGACY_FORMAT, load_checkpoint, resume_point

    ckpt, state = load_checkpoint(run), resume_point(run).state
    legacy = {"format": LEGACY_FORMAT, "config": ckpt["config"], "categories": ckpt["categories"],
              "model": ckpt["model"], "ema": ckpt["ema"], "opt": state["opt"], "rng": state["rng"],
              **{k: state[k] for k in ("epoch", "batch", "step", "elapsed_s", "history")},
              "num_params": ckpt["num_params"]}
    path = dest / "checkpoints" / "last.pt"
    path.parent.mkdir(parents=True)
    torch.save(legacy, path)
    return path


def test_a_legacy_maskgen_run_is_read_and_continued_in_the_run_format(maskgen_full, masks, tmp_path, capsys):
    from maskgen import sample
    from maskgen.checkpoint import load_checkpoint
    from maskgen.train import train

    half = tmp_path / "half"
    train(tiny_config(epochs=1), masks, half, progress=False)
    legacy_run = tmp_path / "legacy"
    last = _legacy_maskgen(half, legacy_run)
    for ckpt_arg in (legacy_run, last):  # readers take the legacy file as they did
        assert load_checkpoint(ckpt_arg)["step"] == load_checkpoint(half)["step"]
    assert sample.main(["--ckpt", str(last), "--out", str(tmp_path / "m"), "--n_per_category", "1", "--no_progress",
                        "--categories", "Sc"]) == 0
    capsys.readouterr()
    done = train(tiny_config(), masks, legacy_run, progress=False)
    assert f"resuming {last}" in capsys.readouterr().err
    _layout(legacy_run, done["step"])  # continued in the format; last.pt is replaced
    assert load_checkpoint(legacy_run)["path"].endswith(f"ckpt_{done['step']:08d}.safetensors")
    _same(load_checkpoint(legacy_run)["model"], load_checkpoint(maskgen_full[0])["model"])
    assert [h["step"] for h in done["history"]] == [h["step"] for h in maskgen_full[1]["history"]]


def test_maskgen_refuses_a_changed_setting_and_a_damaged_state_with_one_line(maskgen_full, masks, tmp_path, capsys):
    import shutil

    from maskgen.train import main

    run = tmp_path / "run"
    shutil.copytree(maskgen_full[0], run)
    argv = ["--data_root", str(masks), "--out", str(run), "--no_progress", "--epochs", "3", "--set",
            "data.image_size=16", "model.base_channels=16", "model.channel_mult=[1,2]", "model.num_res_blocks=1",
            "model.attention_levels=[1]", "model.num_heads=2", "model.groups=4", "model.dropout=0.0",
            "train.batch_size=6"]
    line = _one_line(main, argv, capsys)
    assert line == f"error: {run}: resuming with a different model.base_channels 8 -> 16; use a new --out or the " \
                   "same config", line
    step = maskgen_full[1]["step"]
    (run / "checkpoints" / f"state_{step:08d}.json").write_text('{"tensors": "state_')  # cut short
    (run / "checkpoints" / ".state_x.json.123.tmp").write_text("debris of a killed write")
    argv[argv.index("model.base_channels=16")] = "model.base_channels=8"
    line = _one_line(main, argv, capsys)
    assert f"{run}: no readable checkpoint to resume from" in line and f"state_{step:08d}.json" in line, line
    assert not list(run.rglob("*.tmp"))


# -- the detector -----------------------------------------------------------------------------------------------
DET = ["data.image_size=32", "train.device=cpu", "train.batch_size=3", "train.augment=false", "train.num_threads=1",
       "model.widths=[8,8,8,8,8]", "model.depths=[0,1,1,1,1]"]


@pytest.fixture(scope="module")
def det_pairs(tmp_path_factory):
    from dataset.procedural import write_procedural_dataset

    return write_procedural_dataset(tmp_path_factory.mktemp("rf") / "pairs", 2, size=32)


def _det_cfg(*over: str):
    from evaluation.detector.train import DEFAULT_CONFIG
    from runtime.configs import load_config

    return load_config(DEFAULT_CONFIG, DEFAULT_CONFIG, [*DET, *over])


def test_detector_writes_the_run_format_and_predicts_from_it_without_unpickling(det_pairs, tmp_path):
    from evaluation.detector.predict import Detector
    from evaluation.detector.runs import read_detector, run_summary
    from evaluation.detector.train import train_detector

    final = train_detector(_det_cfg("train.epochs=2"), det_pairs, tmp_path / "d", log=lambda m: None, progress=False)
    assert final == tmp_path / "d" / "detector.safetensors"
    summary = run_summary(tmp_path / "d")
    _layout(tmp_path / "d", summary["steps"])
    assert (summary["epochs"], summary["selected_epoch"], summary["steps"]) == (2, 2, 4)
    rows = [json.loads(line) for line in (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["iteration"], r["epoch"]) for r in rows] == [(2, 1), (4, 2)]
    images = [p.image for p in det_pairs[:2]]
    with no_pickle():
        assert read_detector(final)["epochs"] == 2
        a = list(Detector(final, "cpu")(images))
        b = list(Detector(tmp_path / "d", "cpu")(images))  # the run folder names its final weights
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def _legacy_detector(run: Path, dest: Path) -> None:
    """Legacy last.pt, detector.pt and train_log.json holding the state of ``run``."""
    from evaluation.detector.runs import read_detector, resume_point

    point = resume_point(run)
    dest.mkdir()
    torch.save({"model": point.model, "optimizer": point.state["optimizer"], "scheduler": point.state["scheduler"],
                "epoch": point.state["epoch"], "history": point.state["history"], "config": point.config,
                "best": point.state["best"]}, dest / "last.pt")
    final = read_detector(run)
    torch.save({"model": final["model"], "config": final["config"], "epochs": final["epochs"],
                "n_train": final["n_train"]}, dest / "detector.pt")
    (dest / "train_log.json").write_text(json.dumps({"steps": 2, "warmup_steps": 1}))


def test_a_legacy_detector_run_is_read_and_continued_in_the_run_format(det_pairs, tmp_path):
    from evaluation.detector.predict import Detector
    from evaluation.detector.runs import detector_file, read_detector, run_summary
    from evaluation.detector.train import train_detector

    train_detector(_det_cfg("train.epochs=1"), det_pairs, tmp_path / "new", log=lambda m: None, progress=False)
    _legacy_detector(tmp_path / "new", tmp_path / "old")
    assert detector_file(tmp_path / "old") == tmp_path / "old" / "detector.pt"
    assert run_summary(tmp_path / "old") == {"steps": 2, "warmup_steps": 1}
    assert Detector(tmp_path / "old", "cpu").size == 32
    logs: list[str] = []
    finals = {}
    for name in ("new", "old"):  # the same state, read from the format and from the legacy file
        finals[name] = train_detector(_det_cfg("train.epochs=2"), det_pairs, tmp_path / name, resume=True,
                                      log=logs.append, progress=False)
    assert f"resume: {tmp_path / 'old' / 'last.pt'} at epoch 1" in logs
    assert finals["old"] == tmp_path / "old" / "detector.safetensors"
    _layout(tmp_path / "old", 4)
    for key, value in read_detector(finals["new"])["model"].items():
        assert torch.equal(value, read_detector(finals["old"])["model"][key]), key
    assert run_summary(tmp_path / "old")["steps"] == 4


def test_detector_refuses_a_changed_setting_and_a_damaged_state_with_one_line(det_pairs, tmp_path, capsys):
    from dataset.procedural import write_procedural_dataset
    from evaluation.detector import train

    data = tmp_path / "pairs"
    write_procedural_dataset(data, 2, size=32)
    out = tmp_path / "d"
    argv = ["--data_root", str(data), "--out", str(out), "--ratio", "1:0", "--split", str(tmp_path / "s.json"),
            "--no_progress", "--set", *DET, "train.epochs=1"]
    assert train.main(argv) == 0
    line = _one_line(train.main, [*argv, "train.lr=0.5", "train.epochs=2"], capsys)
    assert line.startswith(f"error: {out}: resuming with a different train.lr ") and "-> 0.5;" in line, line
    state = next((out / "checkpoints").glob("state_*.json"))
    state.write_bytes(b"\x00garbage")
    line = _one_line(train.main, [*argv, "train.epochs=2"], capsys)
    assert f"{out}: no readable checkpoint to resume from" in line and state.name in line, line


def test_a_fresh_detector_run_replaces_the_previous_one(det_pairs, tmp_path):
    from evaluation.detector.train import train_detector

    out = tmp_path / "d"
    train_detector(_det_cfg("train.epochs=2"), det_pairs, out, log=lambda m: None, progress=False)
    (out / "last.pt").write_bytes(b"an old run's file")
    train_detector(_det_cfg("train.epochs=1"), det_pairs, out, log=lambda m: None, progress=False)  # resume=False
    _layout(out, 2)
    assert not (out / "last.pt").exists()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
