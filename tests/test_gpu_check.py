"""tools/gpu_check.py: the CPU dry run of every section, failure recording, and flag errors."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from runtime.errors import UserError
from tools import gpu_check

SECTION_KEYS = [key for key, _, _ in gpu_check.SECTIONS]


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_cpu_tiny_dry_run_passes_every_section(tmp_path, keep_threads):
    out, work = tmp_path / "report", tmp_path / "work"
    assert gpu_check.main(["--device", "cpu", "--tiny", "--out", str(out), "--work", str(work)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert list(data["sections"]) == SECTION_KEYS
    assert {k: v["status"] for k, v in data["sections"].items()} == {k: "pass" for k in SECTION_KEYS}
    report = (out / "report.md").read_text()
    assert all(title in report for _, _, title in gpu_check.SECTIONS) and "FAIL" not in report
    fig = {k: v["figures"] for k, v in data["sections"].items()}
    assert {(r["precision"], r["gradient_checkpointing"]) for r in fig["train"]["rows"]} == {
        ("fp32", True), ("fp32", False), ("bf16", True), ("bf16", False)}
    assert all(r["trainable_set_ok"] and r["frozen_params_unchanged"] for r in fig["train"]["rows"])
    assert fig["resume"]["bitwise_equal"]  # on a CPU the resumed step is exactly the uninterrupted one
    assert fig["ddp"]["wrapper"] == "DistributedDataParallel" and fig["ddp"]["backend"] == "gloo"
    assert fig["infer_sharded"]["images"] == fig["infer_sharded"]["masks"]
    assert fig["generation"]["upscaler"]["ok"] and fig["generation"]["upscaler"]["max_abs_diff_vs_cpu"] == 0
    rows = fig["generation"]["rows"]
    assert {(r["precision"], r["sampler"], r["batch"]) for r in rows} == {
        (p, s, b) for p in ("fp32", "bf16") for s in ("plms 10", "unipc 5") for b in (1, 2)}
    assert all(r["ode_error"] >= 0 and r["speedup_vs_original"] > 0 for r in rows)
    assert {r["precision"] for r in fig["eps"]["rows"]} == {"bf16"}
    assert not work.exists()  # the random checkpoint and run folders are removed


def test_failed_section_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch, keep_threads):
    def broken(ctx, log):
        raise RuntimeError("kernel exploded\nsecond line")

    monkeypatch.setattr(gpu_check, "section_functions",
                        lambda: {"resume": lambda ctx, log: {"ok": True, "value": 1.5}, "eps": broken,
                                 "generation": lambda ctx, log: {"ok": False}})
    out = tmp_path / "report"
    assert gpu_check.main(["--device", "cpu", "--tiny", "--out", str(out), "--only", "2", "4", "eps"]) == 1
    sections = json.loads((out / "results.json").read_text())["sections"]
    assert list(sections) == ["resume", "generation", "eps"]
    assert sections["resume"]["status"] == "pass" and sections["resume"]["figures"]["value"] == 1.5
    assert sections["generation"]["status"] == "fail"
    assert sections["eps"] == {**sections["eps"], "status": "fail", "error": "RuntimeError: kernel exploded"}
    assert "Traceback" in (out / sections["eps"]["traceback"]).read_text()
    assert "error: `RuntimeError: kernel exploded`" in (out / "report.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--device", "cuda:99"], "--device cuda:99"),
    (["--device", "tpu"], "--device 'tpu'"),
    (["--device", "cpu", "--only", "9"], "--only 9"),
])
def test_bad_flags_are_one_line_errors(tmp_path, argv, message):
    with pytest.raises(UserError, match=message.replace("'", ".").replace("-", r"\-")):
        gpu_check.main([*argv, "--out", str(tmp_path)])


def test_run_outside_the_repository_root_is_one_line(monkeypatch, capsys):
    """Started as a script from elsewhere, trainer.py is not importable: say how to run it instead."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trainer" else real(name, *a))
    with pytest.raises(UserError, match="python -m tools.gpu_check"):
        gpu_check.main(["--device", "cpu", "--tiny", "--out", "unused"])
