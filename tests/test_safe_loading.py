"""No file the project reads can run code: a pickle that would create a marker file, given to every
command that loads torch files, is refused with one ``error:`` line (exit 2) and creates nothing."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dataset.procedural import write_procedural_dataset
from runtime.errors import UserError, run_cli
from runtime.safe_load import UnreadableFileError, UnsafeFileError, safe_torch_load


class Payload:
    """Unpickling this runs ``touch marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("safe") / "pairs"
    write_procedural_dataset(root, 2, size=32)
    return root


def _one_error_line(main, argv, capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: main(argv))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exc.value.code == 2, err
    assert "Traceback" not in err and len([x for x in lines if x.startswith("error:")]) == 1, err
    assert lines[-1].startswith("error:"), err
    return lines[-1]


def _refused(line: str, marker: Path) -> None:
    assert "refusing to unpickle" in line and "system" in line, line
    assert "weights_only" not in line and "--allow_unsafe_pickle" not in line, line
    assert not marker.exists(), "the payload ran"


def _evil(path: Path, marker: Path, **content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**content, "config": Payload(marker)}, path)
    return path


def test_safe_loader_refuses_code_and_reads_plain_state(tmp_path):
    marker = tmp_path / "marker"
    with pytest.raises(UnsafeFileError, match="refusing to unpickle"):
        safe_torch_load(_evil(tmp_path / "x.pt", marker), unsafe_flag=None)
    assert not marker.exists()
    plain = {"model": {"w": torch.ones(2)}, "rng": torch.ByteTensor(3), "history": [{"loss": 1.0}],
             "config": {"a": [1, "b", None, (2.0, True)]}}
    torch.save(plain, tmp_path / "ok.pt")
    assert safe_torch_load(tmp_path / "ok.pt")["config"] == plain["config"]
    with open(tmp_path / "raw.pkl", "wb") as fh:  # a bare pickle (not torch's zip): still never executed
        pickle.dump({"config": Payload(marker)}, fh, protocol=4)
    with pytest.raises(UserError) as err:
        safe_torch_load(tmp_path / "raw.pkl")
    assert "weights_only" not in str(err.value) and "\n" not in str(err.value) and not marker.exists()
    (tmp_path / "trunc.pt").write_bytes((tmp_path / "ok.pt").read_bytes()[:50])
    (tmp_path / "empty.pt").write_bytes(b"")
    for bad in ("trunc.pt", "empty.pt", "missing.pt"):
        with pytest.raises(UnreadableFileError, match=bad):
            safe_torch_load(tmp_path / bad)


def test_detector_commands_refuse_a_code_running_checkpoint(tmp_path, data, capsys):
    from evaluation import sample_filter
    from evaluation.detector import predict

    marker = tmp_path / "marker"
    ckpt = _evil(tmp_path / "detector.pt", marker, model={})
    line = _one_error_line(predict.main, ["--ckpt", str(ckpt), "--images", str(data), "--out",
                                          str(tmp_path / "maps")], capsys)
    _refused(line, marker)
    line = _one_error_line(sample_filter.main, ["--ckpt", str(ckpt), "--generated", str(data), "--out",
                                                str(tmp_path / "kept")], capsys)
    _refused(line, marker)
    assert not (tmp_path / "maps").exists() and not (tmp_path / "kept").exists()


TINY_DETECTOR = ["train.epochs=1", "data.image_size=32", "train.batch_size=2", "train.augment=false",
                 "train.device=cpu"]


def test_detector_train_resume_refuses_code_and_foreign_state(tmp_path, data, capsys):
    from evaluation.detector import train

    marker = tmp_path / "marker"
    out = tmp_path / "det"
    _evil(out / "last.pt", marker, model={})
    argv = ["--data_root", str(data), "--out", str(out), "--split", str(tmp_path / "split.json"),
            "--ratio", "2:1", "--resume", "--no_progress", "--set", *TINY_DETECTOR]
    _refused(_one_error_line(train.main, argv, capsys), marker)
    torch.save({"model": {"w": torch.zeros(1)}, "optimizer": {}, "scheduler": {}, "epoch": 1}, out / "last.pt")
    line = _one_error_line(train.main, argv, capsys)
    assert "cannot resume" in line and "last.pt" in line
    assert not (out / "detector.pt").exists()


def test_protocols_refuse_a_planted_detector(tmp_path, data, capsys, monkeypatch):
    from evaluation import protocols

    marker = tmp_path / "marker"
    out = tmp_path / "proto"
    run_dir = out / "detector" / "real"
    _evil(run_dir / "detector.pt", marker, model={})
    (run_dir / "run.json").write_text('{"signature": "planted"}')
    monkeypatch.setattr(protocols, "_signatures", lambda cfg, pairs: ("planted", "planted"))  # the run looks finished
    cfg = tmp_path / "proto.yaml"
    cfg.write_text(f"protocol: substitution\ndata_root: {data}\nratio: '2:1'\nseed: 0\n"
                   f"split: {tmp_path / 'split.json'}\nout: {out}\n"
                   f"detector_overrides: [{', '.join(TINY_DETECTOR)}]\nsettings:\n  - name: real\n    real: true\n")
    _refused(_one_error_line(protocols.main, ["run", "--config", str(cfg), "--no_progress"], capsys), marker)


def _masks(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        m = np.zeros((16, 16), np.uint8)
        m[2 + i % 5:9 + i % 5, 3:10] = 255
        Image.fromarray(m).save(folder / name)
    return folder


def test_maskgen_refuses_a_code_running_checkpoint(tmp_path, capsys):
    from maskgen import sample, train
    from maskgen.checkpoint import LEGACY_FORMAT as CKPT_FORMAT

    marker = tmp_path / "marker"
    run = tmp_path / "run"
    _evil(run / "checkpoints" / "last.pt", marker, format=CKPT_FORMAT)
    for ckpt in (run, run / "checkpoints" / "last.pt"):
        line = _one_error_line(sample.main, ["--ckpt", str(ckpt), "--out", str(tmp_path / "m"), "--no_progress"],
                               capsys)
        _refused(line, marker)
    data = _masks(tmp_path / "masks", [f"{p}_{i}.png" for p in ("In", "Pa", "Sc") for i in range(2)])
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("data: {image_size: 16}\nmodel: {patch_size: 1, base_channels: 8, channel_mult: [1, 2], "
                   "num_res_blocks: 1, attention_levels: [], groups: 4}\ntrain: {epochs: 1, batch_size: 6}\n")
    line = _one_error_line(train.main, ["--data_root", str(data), "--out", str(run), "--config", str(cfg),
                                        "--no_progress"], capsys)
    _refused(line, marker)
    assert not (tmp_path / "m").exists()


def test_inception_weights_found_implicitly_are_read_safely(tmp_path, capsys, monkeypatch):
    """$DEFFILLER_INCEPTION (and so model_sem/ and the hub cache: same code path) for fid, maskgen.report
    and guidance_sweep's extractor."""
    from evaluation import fid
    from maskgen import report

    marker = tmp_path / "marker"
    weights = tmp_path / fid.INCEPTION_FILE
    torch.save({"Conv2d_1a_3x3.conv.weight": Payload(marker)}, weights)
    monkeypatch.setenv(fid.INCEPTION_ENV, str(weights))
    real = _masks(tmp_path / "real", [f"In_{i}.png" for i in range(3)])
    gen = _masks(tmp_path / "gen", [f"In_gen_000{i}.png" for i in range(1, 4)])
    line = _one_error_line(fid.main, ["--real", str(real), "--fake", str(gen), "--no_cache"], capsys)
    _refused(line, marker)
    line = _one_error_line(report.main, ["--real", str(real), "--generated", str(gen), "--out",
                                         str(tmp_path / "rep")], capsys)
    _refused(line, marker)
    with pytest.raises(UserError, match="refusing to unpickle"):
        fid.InceptionFeatures()  # what guidance_sweep builds
    assert not marker.exists()


def test_model_checkpoint_refusal_names_the_unsafe_flag_only_where_it_exists(tmp_path, capsys, monkeypatch):
    """infer.py and main.py have no --allow_unsafe_pickle; tools/check_checkpoint.py has."""
    import sys

    import infer
    import main as train_main
    from tools import check_checkpoint
    from tools.tiny_model import write_masks

    marker = tmp_path / "marker"
    evil = tmp_path / "release.bin"
    torch.save({"model": {"w": torch.zeros(1)}, "config_dict": Payload(marker)}, evil)
    masks = tmp_path / "masks"
    write_masks(masks, ["In_1"])
    line = _one_error_line(infer.main, ["--ckpt", str(evil), "--mask_dir", str(masks), "--folder",
                                        str(tmp_path / "out"), "--device", "cpu"], capsys)
    _refused(line, marker)
    from omegaconf import OmegaConf
    from train_helpers import TINY, TRAIN_TINY

    cfg = tmp_path / "train.yaml"  # procedural data: no dataset needed
    OmegaConf.save(OmegaConf.merge(OmegaConf.load(TINY), TRAIN_TINY), cfg)
    line = _one_error_line(train_main.main, ["--yaml_file", str(cfg), "--OUTPUT_ROOT", str(tmp_path / "runs"),
                                             "--ckpt", str(evil)], capsys)
    _refused(line, marker)
    monkeypatch.setattr(sys, "argv", ["check_checkpoint.py", str(evil)])
    line = _one_error_line(lambda argv: check_checkpoint.main(), [], capsys)
    assert "refusing to unpickle" in line and "--allow_unsafe_pickle" in line and not marker.exists()
