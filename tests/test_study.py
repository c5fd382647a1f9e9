"""The real-data study command (python -m evaluation.study) end to end on a tiny procedural dataset with tiny
models: every stage runs, an interrupted study resumes without redoing finished stages, a changed input
rebuilds only what depends on it, leaking configurations are refused, bad input is one line."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from dataset.procedural import write_procedural_dataset
from evaluation.study import main as study_main
from runtime.errors import UserError, run_cli

REPO = Path(__file__).resolve().parents[1]
DETECTOR = ["model.encoder=test_resnet", "model.decoder_channels=[32,24,16,16]", "data.image_size=32",
            "train.epochs=1", "train.batch_size=8"]
GENERATION = {"sampler": "ddim", "steps": 2, "guidance_scale": 2.0, "output_size": 32, "batch_size": 16}
ALL_STAGES = ["substitution.split", "substitution.generator", "substitution.baseline", "substitution.generation",
              "substitution.detectors", "substitution.fidelity", "expansion.split", "expansion.pretrain",
              "expansion.generator", "expansion.maskgen", "expansion.baseline", "expansion.generation",
              "expansion.filter", "expansion.detectors", "expansion.fidelity", "report"]


def write_tiny_study(root: Path) -> Path:
    """12 procedural pairs per category at 32 px, the tests' tiny generator / mask producer / detector."""
    write_procedural_dataset(root / "data", 12, size=32, seed=3)
    gen = OmegaConf.merge(OmegaConf.load(REPO / "tests" / "assets" / "tiny.yaml"), OmegaConf.create({
        "data": {"name": "tiny", "image_size": 32},
        "train": {"ckpt": "none", "trainable": "all", "batch_size": 2, "workers": 0, "base_learning_rate": 1e-3,
                  "warmup_steps": 1, "total_iters": 2, "save_every_iters": 1000, "log_every": 1, "threads": 1,
                  "disable_inference_in_training": True, "seed": 0, "sampler": "ddim", "sample_steps": 2}}))
    OmegaConf.save(gen, root / "gen.yaml")
    (root / "maskgen.yaml").write_text(yaml.safe_dump({
        "data": {"image_size": 16},
        "model": {"patch_size": 1, "base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                  "attention_levels": [1], "num_heads": 2, "dropout": 0.0, "groups": 4},
        "train": {"epochs": 1, "batch_size": 6, "lr": 2e-3, "warmup_steps": 0, "ema_decay": 0.9, "ckpt_every_epochs": 1},
        "sample": {"steps": 4, "size": 32, "batch_size": 4, "max_retries": 3}}))
    study = {
        "name": "tiny", "profile": "test", "out": str(root / "out"), "data_root": str(root / "data"),
        "device": "cpu", "threads": 1,
        "studies": {
            "substitution": {"split": str(root / "split_9-1.json"), "generator": {"config": str(root / "gen.yaml")},
                             "generation": {**GENERATION, "seeds": [0, 1]}, "detectors": {"overrides": DETECTOR, "seeds": [0, 1]}},
            "expansion": {"split": str(root / "split_1-5.json"), "generator": {"config": str(root / "gen.yaml")},
                          "pretrain": {"enabled": True, "n_per_category": 2},
                          "generation": GENERATION, "detectors": {"overrides": DETECTOR, "seeds": [0]},
                          "maskgen": {"config": str(root / "maskgen.yaml"), "n_per_category": 3,
                                      "calibrate": {"n_per_category": 10}},
                          "filter": {"threshold": 0.0}}},
        "fidelity": {"fid": False}, "report": {"n_grid": 2}}
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def run_study(config: Path, *args: str) -> str:
    """The command in-process; returns what it printed (a UserError propagates)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = study_main(["--config", str(config), "--no_progress", *args])
    assert code == 0, out.getvalue()[-2000:]
    return out.getvalue()


def one_line_error(argv: list[str], capsys) -> str:
    """``python -m evaluation.study ARGV`` through run_cli: exit 2 and one ``error:`` line."""
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: study_main(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def stamps(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / ".stamps").glob("*.json")
            if not p.name.endswith(".started.json")}


def ran(log: str) -> list[str]:
    return [line.split("]")[0][1:] for line in log.splitlines() if line.startswith("[") and "] done in" in line]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The tiny study, interrupted inside the substitution generation (after its first batch), then resumed."""
    import torch

    import inference.generate as generate

    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("study")
    config = write_tiny_study(root)
    out = root / "out"
    real_batch, calls = generate.generate_batch, []

    def interrupt_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_batch(*args, **kwargs)

    generate.generate_batch = interrupt_second_batch
    try:
        with pytest.raises(KeyboardInterrupt):
            run_study(config)
    finally:
        generate.generate_batch = real_batch
    before = stamps(out)
    first = {p.name: p.stat().st_mtime_ns for p in (out / "substitution" / "generated" / "Source_Images").iterdir()}
    times = json.loads((out / "stage_times.json").read_text())
    log = run_study(config)
    yield {"root": root, "config": config, "out": out, "before": before, "first_batch": first,
           "times_interrupted": times, "log": log}
    torch.set_num_threads(threads)


def test_every_stage_runs_and_the_report_is_written(study):
    out = study["out"]
    assert set(stamps(out)) == set(ALL_STAGES)
    report = (out / "report" / "report.md").read_text()
    for text in ("Data substitution (paper Table 5)", "Data expansion (paper Table 8)", "## Targets",
                 "generated-only detector S >= 0.9 x real-trained", "by more than the seeds' spread",
                 "detector IoU on generated >= 0.8 x on real test images", "## Stage wall times",
                 "FID / KID skipped: disabled in the config", "Profile: test"):
        assert text in report, text
    for name in ("table5.csv", "table8.csv", "detector_runs.csv", "fidelity.csv", "stage_times.csv", "detectors.png",
                 "targets.json", "grid_substitution_inclusion.png", "grid_expansion_scratches.png"):
        assert (out / "report" / name).is_file(), name
    table8 = (out / "report" / "table8.csv").read_text().splitlines()
    assert table8[0].startswith("study,setting,train_data,n_train,n_test,seeds,S_mean,S_std,MAE_mean,MAE_std")
    assert "*fill in*" not in report and "paper" not in table8[0]  # the paper's figures: the shared tables alone
    assert [r.split(",")[1] for r in table8[1:]] == ["real", "real+generated", "real+filtered"]
    # the mask producer's levels were fitted on a draw of its own, and it is scored on held-out masks too
    mg = out / "expansion" / "maskgen"
    cal = json.loads((mg / "calibration.json").read_text())
    manifest = json.loads((mg / "masks" / "maskgen_manifest.json").read_text())
    assert cal["seed"] == 1000 and manifest["settings"]["seed"] == 0
    assert manifest["settings"]["thresholds"] == cal["thresholds"]
    assert json.loads((mg / "report_heldout" / "report.json").read_text())["real"].endswith("listed masks")
    assert "held-out test masks" in report
    assert all(r.split(",")[5] == "1" for r in table8[1:])  # one seed: no spread
    assert ("| expansion: real+generated beats real in S by more than the seeds' spread (paired per seed: mean "
            "difference > its std) | not evaluable |") in report
    assert "Paired S differences against `real`" in report and "bootstrap 95 % (test images)" in report
    table5 = list(csv.DictReader(io.StringIO((out / "report" / "table5.csv").read_text())))
    # one row per generation seed, each over the two detector seeds; the target pools the four paired ratios
    assert [(r["setting"], r["seeds"]) for r in table5] == [("real", "2"), ("generated", "2"),
                                                            ("generated (generation seed 1)", "2")]
    assert "paired per detector seed x generation seed" in report and "seed1 (generation seed 1) " in report
    sub = out / "substitution"
    assert len(list((sub / "generated_seed1" / "Source_Images").iterdir())) == 33
    assert [json.loads((sub / d / "generation.json").read_text())["settings"]["seed"]
            for d in ("generated", "generated_seed1")] == [0, 1]
    times = json.loads((out / "stage_times.json").read_text())
    assert set(times) == set(ALL_STAGES) and all(times[k]["seconds"] > 0 for k in ALL_STAGES)
    fidelity = json.loads((out / "substitution" / "fidelity" / "fidelity.json").read_text())
    assert fidelity["iou"]["n_generated"] == 33 and fidelity["iou"]["n_test"] == 3
    assert set(fidelity["iou"]["per_category"]) == {"inclusion", "patches", "scratches", "overall"}
    assert (out / "substitution" / "generator" / "latest.json").is_file()  # main.py's run folder


def test_an_interrupted_study_resumes_where_it_stopped(study):
    before, out = study["before"], study["out"]
    assert set(before) == {"substitution.split", "substitution.generator", "substitution.baseline"}
    after = stamps(out)
    for key, stamp in before.items():  # finished stages were not redone
        assert after[key]["digest"] == stamp["digest"] and after[key]["finished"] == stamp["finished"]
    assert ran(study["log"])[0] == "substitution.generation"
    # inside the stage, the pairs of the first batch were kept, not generated again
    images = out / "substitution" / "generated" / "Source_Images"
    assert len(study["first_batch"]) == 16
    assert all((images / n).stat().st_mtime_ns == t for n, t in study["first_batch"].items())
    attempts = study["times_interrupted"]["substitution.generation"]["attempts"]
    assert [a["status"] for a in attempts] == ["interrupted"]


def test_the_real_only_detectors_are_trained_once_by_the_baseline_stage(study):
    """The detectors stage reuses the baseline's runs, and the IoU filter uses the run of its seed."""
    log, out = study["log"], study["out"]
    assert "[seed0 / real] reusing" in log and "[seed1 / real] reusing" in log  # substitution, both seeds
    stamp = stamps(out)
    runs = stamp["expansion.baseline"]["outputs"]["detectors"]
    assert list(runs) == ["0"] and Path(runs["0"]).parent == out / "expansion" / "detectors" / "seed0" / "real"
    assert stamp["expansion.filter"]["outputs"]["detector"] == runs["0"]
    assert not (out / "expansion" / "filter" / "detector").exists()  # no detector of its own
    assert list(stamp["substitution.baseline"]["outputs"]["detectors"]) == ["0", "1"]


def test_plan_says_everything_is_up_to_date_and_a_rerun_does_nothing(study):
    plan = run_study(study["config"], "--plan")
    rows = [line for line in plan.splitlines() if line.startswith("  ")]
    assert len(rows) == len(ALL_STAGES) and all(r.startswith("  ok ") for r in rows), plan
    before = stamps(study["out"])
    log = run_study(study["config"])
    assert ran(log) == [] and stamps(study["out"]) == before


def test_a_changed_input_rebuilds_only_what_depends_on_it(study):
    config, out = study["config"], study["out"]
    cfg = yaml.safe_load(config.read_text())
    cfg["studies"]["expansion"]["filter"]["threshold"] = 0.3
    config.write_text(yaml.safe_dump(cfg))
    plan = run_study(config, "--plan")
    assert "RUN expansion.filter" in plan and "inputs changed (threshold)" in plan
    before = stamps(out)
    log = run_study(config, "--force", "substitution.fidelity")
    assert ran(log) == ["substitution.fidelity", "expansion.filter", "expansion.detectors", "expansion.fidelity",
                        "report"]
    after = stamps(out)
    for key in set(ALL_STAGES) - set(ran(log)):
        assert after[key] == before[key], key
    # the detector runs whose data did not change were reused
    assert "[seed0 / real] reusing" in log and "[seed0 / real+generated] reusing" in log


def test_a_generator_run_started_by_hand_is_resumed_not_redone(tmp_path, monkeypatch):
    """main.py started by hand with the study's flags (relative paths, from another directory) and stopped
    after 1 of its 2 iterations: the generator stage continues that run."""
    import main

    config = write_tiny_study(tmp_path)
    log = run_study(config, "--until", "split")  # a kind: every study's split stage
    assert ran(log) == ["substitution.split", "expansion.split"]
    monkeypatch.chdir(tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main.main(["--name", "generator", "--output_root", "out/substitution", "--config", "gen.yaml",
                          "--DATA_ROOT", "data", "--split", "split_9-1.json", "--set", "train.total_iters=1"]) == 0
    # while that command is still running, the stage refuses to train the same run folder beside it
    fake = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "main.py", "--name", "generator",
                             "--output_root", "out/substitution"], cwd=tmp_path)
    try:
        with pytest.raises(UserError, match=rf"another process is training this run right now \(pid {fake.pid}: "):
            run_study(config, "--until", "substitution.generator")
    finally:
        fake.kill()
        fake.wait()
    log = run_study(config, "--until", "substitution.generator")
    assert ran(log) == ["substitution.generator"]
    assert "resuming at iteration 1" in log
    run = tmp_path / "out" / "substitution" / "generator"
    assert json.loads((run / "latest.json").read_text())["iteration"] == 2
    assert (run / "checkpoints" / "ckpt_00000001.safetensors").is_file()  # the hand-made checkpoint, kept
    saved = OmegaConf.load(run / "config.yaml").train
    assert (saved.DATA_ROOT, saved.split) == ("data", "split_9-1.json")  # the run's own spelling of its data


def test_a_generator_trained_on_the_other_studys_split_is_refused(study, capsys):
    """expansion.generator pointed at the substitution generator (trained on the 9:1 split, which holds most of
    the 1:5 test samples)."""
    line = one_line_error(["--config", str(study["config"]), "--no_progress", "--until", "expansion.generator",
                           "--set", f"studies.expansion.generator.run={study['out'] / 'substitution' / 'generator'}"],
                          capsys)
    assert line.startswith("error: leak: stage expansion.generator would train on")
    assert "test sample(s)" in line and "split_9-1.json" in line


def test_a_release_is_the_generator_only_for_the_split_it_names(study, capsys):
    """A generator file (here the tiny substitution run's checkpoint, whose metadata holds its split's sha256)
    used as is: accepted by the study whose split it names, refused as a leak by the other."""
    from training.runs import latest_weights

    ckpt, _ = latest_weights(study["out"] / "substitution" / "generator")
    cfg = yaml.safe_load(study["config"].read_text())
    cfg["out"] = str(study["root"] / "out_release")
    for name in ("substitution", "expansion"):
        cfg["studies"][name]["generator"]["release"] = str(ckpt)
    cfg["studies"]["expansion"]["pretrain"]["enabled"] = False
    config = study["root"] / "release.yaml"
    config.write_text(yaml.safe_dump(cfg))
    log = run_study(config, "--until", "substitution.generator", "--set", "studies.expansion.enabled=false")
    assert f"release {ckpt}: trained on this study's split" in log
    stamp = stamps(study["root"] / "out_release")["substitution.generator"]
    assert stamp["outputs"]["ckpt"] == str(ckpt) and stamp["outputs"]["run"] is None
    assert not (study["root"] / "out_release" / "substitution" / "generator").exists()  # nothing trained
    line = one_line_error(["--config", str(config), "--no_progress", "--plan"], capsys)  # refused before running
    assert line.startswith("error: leak: stage expansion.generator: the release") and "another split" in line


def test_generation_from_test_masks_is_refused(study, capsys):
    """Generation from every mask of the dataset (test masks included): refused before generating."""
    masks = study["root"] / "data" / "Ground_truth"
    line = one_line_error(["--config", str(study["config"]), "--no_progress", "--until", "substitution.detectors",
                           "--set", f"studies.substitution.generation.mask_dir={masks}"], capsys)
    split = json.loads((study["root"] / "split_9-1.json").read_text())
    assert line.startswith(f"error: leak: stage substitution.generation would generate from {masks}")
    assert "whose pixels equal the test mask" in line and "(and 2 more file(s))" in line
    assert any(f"{stem}.png" in line for stem in split["test"])
    assert not (study["out"] / ".stamps" / "substitution.generation.json").exists()


def test_bad_input_is_one_line(tmp_path, capsys, monkeypatch):
    config = write_tiny_study(tmp_path)
    line = one_line_error(["--config", str(config), "--plan", "--set", f"data_root={tmp_path / 'nowhere'}"], capsys)
    assert f"data_root {tmp_path / 'nowhere'}: dataset folder not found" in line and "--set data_root=" in line
    # thresholds fitted on the very masks the study samples: refused before anything runs
    line = one_line_error(["--config", str(config), "--plan", "--set", "studies.expansion.maskgen.calibrate.seed=0"],
                          capsys)
    assert "calibrate.seed equals maskgen.seed (0)" in line
    # a split file made for another dataset
    bad = tmp_path / "other_split.json"
    bad.write_text(json.dumps({"train": ["In_1", "Xx_7"], "test": ["In_2"], "seed": 0, "test_fraction": 0.1}))
    line = one_line_error(["--config", str(config), "--no_progress", "--until", "substitution.split",
                           "--set", f"studies.substitution.split={bad}"], capsys)
    assert "other_split.json: 1 sample(s) of the split are not in data_root" in line and "Xx_7" in line
    # the expansion study (1:5) pointed at the substitution study's 9:1 split
    run_study(config, "--until", "substitution.split")
    capsys.readouterr()
    line = one_line_error(["--config", str(config), "--no_progress", "--until", "expansion.split", "--set",
                           f"studies.expansion.split={tmp_path / 'split_9-1.json'}", "studies.substitution.enabled=false"],
                          capsys)
    assert "split_9-1.json: 3 of 36 samples are test samples" in line and "the expansion study is a 1:5 split" in line
    # the paper config: every stage planned, the missing release weights named (main.py reads them from the cwd)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: study_main(["--config", str(REPO / "configs" / "study" / "sd900_paper.yaml"), "--plan",
                                    "--set", f"data_root={tmp_path / 'data'}", f"out={tmp_path / 'paper'}"]))
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert "RUN expansion.maskgen" in captured.out and "RUN report" in captured.out
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("error: model_sem/sem_diffusion_pytorch_model.bin: initial weights "
                                                 "of studies.") for e in errors)
    assert "download diffusion_pytorch_model.bin from https://huggingface.co/gligen" in errors[0]


def test_the_shipped_configs_load_and_plan(tmp_path):
    from evaluation.study.config import load_study_config
    from evaluation.study.stages import build_stages

    for name in ("sd900_cpu", "sd900_quick", "sd900_paper"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # no retired section left in a shipped config
            cfg = load_study_config(REPO / "configs" / "study" / f"{name}.yaml")
        keys = [s.key for s in build_stages(cfg)]
        assert keys[0] == "substitution.split" and keys[-1] == "report" and "expansion.filter" in keys
        assert cfg["out"] == str(REPO / "OUTPUT" / "study" / name)
    cpu = load_study_config(REPO / "configs" / "study" / "sd900_cpu.yaml")
    assert cpu["data_root"] == str((REPO / ".." / "shared" / "data" / "SD-saliency-900").resolve())
    assert cpu["studies"]["substitution"]["generator"]["config"] == str(REPO / "configs" / "sd900_cpu_vpred.yaml")
    assert cpu["studies"]["substitution"]["detectors"]["overrides"] == []  # the detector validated by default
    assert cpu["studies"]["substitution"]["detectors"]["seeds"] == [0, 1, 2]
    assert cpu["studies"]["substitution"]["generation"]["seeds"] == [0, 1]
    assert cpu["studies"]["expansion"]["generation"]["seeds"] == [0, 1] and cpu["jobs"] == 2
    with pytest.raises(UserError, match="unknown key 'studies.expansion.filter.treshold'"):
        load_study_config(REPO / "configs" / "study" / "sd900_cpu.yaml", ["studies.expansion.filter.treshold=0.5"])


def test_a_split_rewritten_after_training_is_refused(study, capsys):
    """The 9:1 split rewritten (one training and one test sample swapped) after its generator trained: the
    generator's checkpoints record the split's sha256, and the stage refuses to go on with the new split."""
    path = study["root"] / "split_9-1.json"
    original = path.read_bytes()
    split = json.loads(original)
    a = next(s for s in split["train"] if s.startswith("In_"))
    b = next(s for s in split["test"] if s.startswith("In_"))
    split["train"] = sorted([*split["train"], b])
    split["train"].remove(a)
    split["test"] = sorted([*split["test"], a])
    split["test"].remove(b)
    path.write_text(json.dumps(split))
    try:
        line = one_line_error(["--config", str(study["config"]), "--no_progress", "--until", "substitution.generator"],
                              capsys)
    finally:
        path.write_bytes(original)
    assert f"{path}: the split changed after " in line and "--force substitution.generator" in line


PAPER_CSV = """table,study,network,generation_method,S,MAE,E_max,F_max
5,substitution,NetA,none (real),0.800,0.030,0.900,0.800
5,substitution,NetA,DefFiller,0.760,0.040,0.880,0.780
5,substitution,NetB,none (real),0.900,0.020,0.950,0.850
5,substitution,NetB,DefFiller,0.900,0.021,0.951,0.851
8,expansion,NetA,none (real 150),0.700,0.050,0.850,0.700
8,expansion,NetA,AdaBLDM,0.710,0.050,0.850,0.700
8,expansion,NetA,DefFiller,0.733,0.040,0.870,0.720
"""


def test_the_report_prints_the_papers_figures_and_ratios_beside_ours(study, tmp_path, monkeypatch, capsys):
    """The paper's rows and ratios come from $DEFFILLER_SHARED/paper/deffiller_tables.csv at report time."""
    shared = tmp_path / "shared"
    (shared / "paper").mkdir(parents=True)
    (shared / "paper" / "deffiller_tables.csv").write_text(PAPER_CSV)
    monkeypatch.setenv("DEFFILLER_SHARED", str(shared))
    run_study(study["config"], "--until", "report")  # the report follows the file's arrival
    report = (study["out"] / "report" / "report.md").read_text()
    table5 = json.loads((study["out"] / "report" / "targets.json").read_text())["tables"]["substitution"]
    s = {r["setting"]: r["S"] for r in table5}
    ours = (s["generated"] + s["generated (generation seed 1)"]) / 2 / s["real"]  # the mean over generation seeds
    assert "The paper's Table 5" in report and "| NetA | real | 0.800 | 0.030 | 0.900 | 0.800 |" in report
    assert "| NetA | generated by DefFiller | 0.760 |" in report and "| NetA | real 150 + AdaBLDM | 0.710 |" in report
    assert (f"paper NetA 0.95×, NetB 1.00× (range 0.95× to 1.00×); ours {ours:.2f}×"
            in report)
    assert "real pairs alone: paper NetA +0.033 (range +0.033 to +0.033); ours " in report
    monkeypatch.setenv("DEFFILLER_SHARED", str(tmp_path / "nowhere"))
    run_study(study["config"], "--until", "report")
    report = (study["out"] / "report" / "report.md").read_text()
    assert "The paper's Table 5 figures are left out: " in report and "NetA" not in report
    (shared / "paper" / "deffiller_tables.csv").write_text("table,network\n5,NetA\n")
    monkeypatch.setenv("DEFFILLER_SHARED", str(shared))
    line = one_line_error(["--config", str(study["config"]), "--no_progress"], capsys)
    assert "deffiller_tables.csv: unreadable paper table (KeyError" in line and "restore it" in line


def test_the_report_prints_the_shared_papers_tables(study, shared_dir, monkeypatch):
    """The paper's figures come from the shared folder's paper/deffiller_tables.csv (skipped where it is absent)."""
    tables = shared_dir / "paper" / "deffiller_tables.csv"
    if not tables.is_file():
        pytest.skip(f"the paper's tables not found at {tables}")
    monkeypatch.setenv("DEFFILLER_SHARED", str(shared_dir))
    run_study(study["config"], "--until", "report")
    report = (study["out"] / "report" / "report.md").read_text()
    for study_name, table in (("substitution", 5), ("expansion", 8)):
        assert f"The paper's Table {table} (detectors trained until convergence" in report, study_name
    assert f"`{tables}`" in report and "| CSEPNet | real | 0.887 |" in report and "*fill in*" not in report


def test_an_old_config_with_a_paper_section_loads_with_one_warning(study, tmp_path):
    from evaluation.study.config import load_study_config

    old = yaml.safe_load(study["config"].read_text())
    old["paper"] = {"substitution": {"real": {"S": None, "MAE": None, "E_max": None, "F_max": None}}}
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(old))
    with pytest.warns(UserWarning, match=r"'paper:' section is no longer read .*deffiller_tables\.csv.*remove it") as seen:
        cfg = load_study_config(path)
    assert len(seen) == 1 and "\n" not in str(seen[0].message) and "paper" not in cfg


def test_jobs_generate_seeds_and_train_detectors_side_by_side_with_the_same_results(study):
    """--jobs 2 redoes the substitution generation (two seeds) and its detectors in worker processes: the same
    pictures and the same scores as the one-after-another run of the fixture. Runs last: it rewrites the folders."""
    out = study["out"] / "substitution"

    def pictures() -> dict[str, bytes]:
        return {f"{d}/{p.name}": p.read_bytes() for d in ("generated", "generated_seed1")
                for p in sorted((out / d / "Source_Images").iterdir())}

    def scores() -> dict[tuple[str, str], float]:
        rows = json.loads((out / "detectors" / "results.json").read_text())["rows"]
        return {(r["detector"], r["setting"]): r["S"] for r in rows}

    serial_pictures, serial_scores = pictures(), scores()
    for meta in (out / "detectors").glob("seed0/*/run.json"):  # the regenerated pairs are byte-identical, so
        if meta.parent.name != "real":                         # their runs would be reused: make detector seed
            meta.unlink()                                      # 0's train again
    log = run_study(study["config"], "--jobs", "2", "--force", "substitution.generation")
    assert "[substitution.generation] 2 generation seeds, 2 at a time in worker processes" in log
    assert "training 2 detector runs, 2 at a time in worker processes" in log  # the others are reused
    assert pictures() == serial_pictures
    assert scores() == pytest.approx(serial_scores, abs=1e-6)


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_jobs_train_the_generator_the_mask_producer_and_the_baseline_side_by_side(study):
    """--jobs 2: the expansion study's generator, mask producer and baseline detectors (independent training
    stages) retrain at the same time in worker processes, with the same new masks and detector weights as the
    one-after-another run. Runs last."""
    masks = study["out"] / "expansion" / "maskgen" / "masks"
    baseline = study["out"] / "expansion" / "detectors" / "seed0" / "real" / "detector.safetensors"

    def pictures() -> dict[str, bytes]:
        return {str(p.relative_to(masks)): p.read_bytes() for p in sorted(masks.rglob("*.png"))}

    serial, serial_weights = pictures(), _weights(baseline)
    log = run_study(study["config"], "--jobs", "2", "--force", "expansion.generator", "expansion.maskgen",
                    "expansion.baseline", "--until", "expansion.baseline")
    assert ("expansion.generator, expansion.maskgen, expansion.baseline: side by side in worker processes, "
            "1 thread(s) each") in log
    assert sorted(ran(log)) == ["expansion.baseline", "expansion.generator", "expansion.maskgen"]
    assert serial and pictures() == serial
    weights = _weights(baseline)
    assert weights.keys() == serial_weights.keys() and all((weights[k] == serial_weights[k]).all() for k in weights)
    run = study["out"] / "expansion" / "generator"
    assert json.loads((run / "latest.json").read_text())["iteration"] == 2
    assert len(list(run.parent.glob("generator.old-*"))) == 1  # --force moved the old run aside
    times = json.loads((study["out"] / "stage_times.json").read_text())
    assert times["expansion.maskgen"]["attempts"][-1]["status"] == "finished"
    assert times["expansion.maskgen"]["beside"] == ["expansion.generator", "expansion.baseline"]
    assert times["expansion.generator"]["attempts"][-1]["beside"] == ["expansion.maskgen", "expansion.baseline"]
    from evaluation.study.config import load_study_config
    from evaluation.study.context import Ctx
    from evaluation.study.report import times_markdown
    from evaluation.study.stamps import StampStore

    cfg = load_study_config(study["config"])
    table = times_markdown(Ctx(cfg, StampStore(cfg["out"]), print), study["root"])
    assert "(beside expansion.generator, expansion.baseline) |" in table and "counted each in full" in table

