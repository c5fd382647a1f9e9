"""Full disks, file-size limits and read-only folders are one line naming the path and the cause, leave no
partial file and resume once fixed; infer.py killed in its first batch (kill -9, kill -15) resumes in place."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import infer
from runtime.errors import UserError, run_cli
from tools.tiny_model import make_tiny_checkpoint, write_masks

REPO = Path(__file__).resolve().parents[1]
NAMES = ["In_1", "Pa_2", "Sc_3"]
# run a module's command line with a file-size limit (bytes): writes beyond it fail with EFBIG
LIMITED = ("import resource, runpy, sys; n = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); "
           "sys.argv = sys.argv[2:]; runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)")
# infer.py that kills itself (the signal in argv[1]) right after writing its first pair, before any record of it
KILLED = ("import os, signal, sys; from inference import writer; real = writer.PairedWriter.write\n"
          "sig = getattr(signal, sys.argv[1])\n"
          "def write(self, *a, **k):\n    real(self, *a, **k); os.kill(os.getpid(), sig)\n"
          "writer.PairedWriter.write = write; sys.argv = ['infer.py', *sys.argv[2:]]\n"
          "from inference.cli import entry_point; entry_point()")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("write_errors")
    ckpt = make_tiny_checkpoint(root / "tiny.safetensors")
    write_masks(root / "masks", NAMES)
    reference = root / "ref"
    assert infer.main(infer_args(ckpt, root / "masks", reference)) == 0
    return ckpt, root / "masks", reference


def infer_args(ckpt, masks, out):
    return ["--ckpt", str(ckpt), "--mask_dir", str(masks), "--out", str(out), "--steps", "1", "--sampler", "ddim",
            "--batch_size", "2", "--device", "cpu"]


def run(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)


def one_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def same_pairs(out: Path, reference: Path) -> None:
    record = json.loads((out / "generation.json").read_text())
    assert sorted(record["images"]) == NAMES
    for name in NAMES:
        for folder in ("Source_Images", "Ground_truth"):
            assert (out / folder / f"{name}.png").read_bytes() == (reference / folder / f"{name}.png").read_bytes()
    assert not [p for p in out.rglob("*.tmp")]


@pytest.mark.parametrize("sig, code", [("SIGKILL", -signal.SIGKILL), ("SIGTERM", 128 + signal.SIGTERM)])
def test_infer_killed_in_its_first_batch_resumes_in_the_same_folder(tiny, tmp_path, sig, code):
    ckpt, masks, reference = tiny
    out = tmp_path / "s"
    proc = run("-c", KILLED, sig, *infer_args(ckpt, masks, out))
    assert proc.returncode == code, proc.stderr[-2000:]
    assert (out / "Source_Images" / "In_1.png").is_file() and not (out / "generation.json").exists()
    ranks = json.loads((out / "generation.rank0.json").read_text())["images"]
    assert sorted(ranks) == ([] if sig == "SIGKILL" else ["In_1"])  # SIGTERM flushed the pair it wrote
    if sig == "SIGKILL":  # a pair without a record is regenerated, not adopted: spoil it to tell the two apart
        (out / "Source_Images" / "In_1.png").write_bytes(b"not the pair the settings make")
    assert infer.main(infer_args(ckpt, masks, out)) == 0  # the same command, the same folder
    same_pairs(out, reference)


def test_infer_after_a_full_disk_resumes_once_space_is_freed(tiny, tmp_path, monkeypatch):
    ckpt, masks, reference = tiny
    import inference.writer as writer

    real, calls = writer.write_png_atomic, []

    def fills_up(image, path):
        calls.append(path)
        if len(calls) > 3:  # a pair and a half of the first batch
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(image, path)
    monkeypatch.setattr(writer, "write_png_atomic", fills_up)
    with pytest.raises(UserError, match="No space left on device.*rerun to resume"):
        infer.main(infer_args(ckpt, masks, tmp_path / "s"))
    monkeypatch.setattr(writer, "write_png_atomic", real)
    assert infer.main(infer_args(ckpt, masks, tmp_path / "s")) == 0
    same_pairs(tmp_path / "s", reference)


def test_a_file_size_limit_is_one_line_and_resumable(tmp_path):
    from test_maskgen_pipeline import make_masks

    data = make_masks(tmp_path / "data", per_category=2)
    argv = ["maskgen.train", "--data_root", str(data), "--out", str(tmp_path / "run"), "--epochs", "1",
            "--no_progress", "--set", "model.base_channels=8", "model.channel_mult=[1,2]", "model.num_res_blocks=1",
            "model.attention_levels=[1]", "model.num_heads=2", "model.groups=4", "data.image_size=16"]
    line = one_line(run("-c", LIMITED, "20000", *argv))
    assert ".safetensors: cannot write (File too large); raise the file-size limit" in line, line
    assert not list((tmp_path / "run").rglob("*.tmp"))
    from maskgen.train import main as maskgen_main

    assert maskgen_main(argv[1:]) == 0  # the same command without the limit, in this process
    assert (tmp_path / "run" / "latest.json").is_file()

    images = tmp_path / "data_root" / "Source_Images"
    images.mkdir(parents=True)
    (images / "In_1.png").write_bytes(b"")
    line = one_line(run("-c", LIMITED, "10", "dataset.captions", "--data_root", str(tmp_path / "data_root")))
    assert "caption.json: cannot write (File too large)" in line
    assert [p.name for p in (tmp_path / "data_root").iterdir()] == ["Source_Images"]


def test_training_under_a_file_size_limit_is_one_line_and_reruns(tmp_path):
    """main.py: the checkpoint is what outgrows the limit; one line naming it, no partial file, then the same
    command with the limit lifted trains the run to its end."""
    from train_helpers import run_main, tiny_train_config

    config = tiny_train_config(tmp_path)
    argv = ["main", "--yaml_file", str(config), "--OUTPUT_ROOT", str(tmp_path / "runs"), "--name", "run",
            "--no_progress"]
    line = one_line(run("-c", LIMITED, "200000", *argv))
    assert "cannot write the run folder" in line and "ckpt_00000002.safetensors: File too large" in line, line
    assert "raise the file-size limit (ulimit -f), then rerun the same command to resume" in line, line
    assert not list((tmp_path / "runs").rglob("*.tmp"))
    assert run_main(config, tmp_path / "runs", "run", "--no_progress") == 0   # the same command, in this process
    assert (tmp_path / "runs" / "run" / "checkpoints" / "latest.safetensors").is_file()


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS])
def test_every_writer_turns_a_write_error_into_one_line(tmp_path, monkeypatch, capsys, err):
    """sample_filter, detector.predict, mask_adherence --out and process_json through run_cli: one line naming
    the file and the cause, no temporary file left (the atomic write is what fails)."""
    from test_eval_filter import _generated

    from dataset import captions
    from evaluation import mask_adherence, sample_filter
    from evaluation.detector import predict

    root, _ = _generated(tmp_path)

    def fails(fd):
        raise OSError(err, os.strerror(err))
    monkeypatch.setattr("runtime.atomic.os.fsync", fails)

    class Zero:
        def __init__(self, *a, **k):
            pass

        def __call__(self, paths, progress=False):
            import numpy as np
            return [np.zeros((20, 20), np.float32) for _ in paths]

        def predict_paths(self, paths, progress):
            for p, m in zip(paths, self(paths)):
                yield p, m
    monkeypatch.setattr(predict, "Detector", Zero)
    calls = [
        (sample_filter.main, ["--ckpt", "x", "--generated", str(root), "--out", str(tmp_path / "kept")]),
        (predict.main, ["--ckpt", "x", "--images", str(root), "--out", str(tmp_path / "maps")]),
        (mask_adherence.main, ["--generated", str(root), "--out", str(tmp_path / "adh.json")]),
        (captions.main, ["--data_root", str(root), "--overwrite"]),
    ]
    for main, argv in calls:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            run_cli(lambda: main(argv))
        stderr = capsys.readouterr().err
        lines = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert exc.value.code == 2 and len(lines) == 1 and os.strerror(err) in lines[0], (main, stderr)
        assert str(tmp_path) in lines[0]
    assert not [p for p in tmp_path.rglob("*.tmp")]
