"""Detector training/prediction and the substitution/expansion protocols, end to end on tiny
procedural data (a 0.4M-parameter timm test encoder at 32x32, one epoch)."""
from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from dataset.procedural import write_procedural_dataset
from dataset.splits import load_split
from evaluation.detector.model import SaliencyUNet
from evaluation.protocols import main as protocols_main
from evaluation.protocols import run_protocol
from runtime.configs import load_config
from runtime.errors import UserError, run_cli

TINY = ["model.arch=unet", "model.encoder=test_resnet", "model.decoder_channels=[32,24,16,16]",
        "data.image_size=32",
        "train.epochs=1", "train.batch_size=8", "train.num_threads=1", "train.device=cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("proto")
    write_procedural_dataset(root / "real", 6, size=40, seed=3)
    return root


def _generated_from(real, stems, out):
    """Stand-in for infer.py output: the named masks with new (brightened) images."""
    (out / "Source_Images").mkdir(parents=True)
    (out / "Ground_truth").mkdir()
    for stem in stems:
        img = np.asarray(Image.open(real / "Source_Images" / f"{stem}.png"), np.int16)
        Image.fromarray(np.clip(img + 15, 0, 255).astype(np.uint8)).save(out / "Source_Images" / f"{stem}.png")
        shutil.copy(real / "Ground_truth" / f"{stem}.png", out / "Ground_truth" / f"{stem}.png")
    return out


def test_model_output_matches_input_size():
    import torch

    model = SaliencyUNet("test_resnet", decoder_channels=(16, 16, 16, 16)).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 40, 56)).shape == (2, 1, 40, 56)


def test_bad_encoder_is_a_user_error():
    with pytest.raises(UserError, match="timm encoder"):
        SaliencyUNet("no_such_model_xyz")
    with pytest.raises(UserError, match="not found"):
        SaliencyUNet("test_resnet", pretrained="/nonexistent/weights.pth")


def _cfg(data, protocol, settings, ratio, extra=()):
    base = {"protocol": protocol, "data_root": str(data / "real"), "ratio": ratio, "seed": 0,
            "split": str(data / f"split_{ratio.replace(':', '-')}.json"), "out": str(data / f"out_{protocol}"),
            "detectors": [{"name": "tiny", "config": None, "overrides": []}],
            "detector_overrides": TINY, "settings": settings}
    return OmegaConf.merge(OmegaConf.create(base), OmegaConf.from_dotlist(list(extra)))


def test_substitution_end_to_end(data):
    # the split file is shared with training: make it first, then generate from its train masks
    from dataset.splits import split_pairs

    train, test, split_path = split_pairs(data / "real", data / "split_9-1.json", "9:1", 0, log=lambda m: None)
    gen = _generated_from(data / "real", [p.stem for p in train], data / "gen_sub")
    cfg = _cfg(data, "substitution", [{"name": "real", "real": True},
                                       {"name": "generated", "real": False, "generated": [{"dir": str(gen), "n": None}]}],
               "9:1")
    logs = []
    rows = run_protocol(cfg, progress=False, log=logs.append)
    assert [r["setting"] for r in rows] == ["real", "generated"]
    assert rows[0]["n_real"] == len(train) and rows[1]["n_generated"] == len(train) and rows[1]["n_real"] == 0
    assert all(r["n_test"] == len(test) for r in rows)
    for r in rows:
        assert 0.0 <= r["S"] <= 1.0 and 0.0 <= r["MAE"] <= 1.0
    out = data / "out_substitution"
    md = (out / "results.md").read_text()
    assert "| setting | train_data | S ↑ | MAE ↓ | E-max ↑ | F-max ↑ |" in md and "Table 5" in md
    table = list(csv.DictReader((out / "results.csv").open()))
    assert [t["setting"] for t in table] == ["real", "generated"]
    cats = list(csv.DictReader((out / "results_per_category.csv").open()))
    assert {c["category"] for c in cats} == {"inclusion", "patches", "scratches", "overall"}
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((out / "tiny" / "real" / "maps").glob("*.png"))) == len(test)
    # a second run reuses the finished detectors
    logs.clear()
    run_protocol(cfg, progress=False, log=logs.append)
    assert sum("reusing" in m for m in logs) == 2
    assert load_split(split_path)["test"] == [p.stem for p in test]


def test_substitution_refuses_generated_pairs_from_test_masks(data):
    from dataset.splits import split_pairs

    _, test, _ = split_pairs(data / "real", data / "split_9-1.json", "9:1", 0, log=lambda m: None)
    gen = _generated_from(data / "real", [p.stem for p in test], data / "gen_leak")
    cfg = _cfg(data, "substitution", [{"name": "g", "generated": [{"dir": str(gen)}]}], "9:1",
               [f"out={data / 'out_leak'}"])
    with pytest.raises(UserError, match="named like test samples"):
        run_protocol(cfg, progress=False, log=lambda m: None)


def test_expansion_end_to_end_via_cli(data, capsys):
    write_procedural_dataset(data / "gen_exp", 4, size=40, seed=99,
                             categories=[{"name": "inclusion", "prefix": "GenIn", "index": 1},
                                         {"name": "patches", "prefix": "GenPa", "index": 2},
                                         {"name": "scratches", "prefix": "GenSc", "index": 3}])
    # generated names carry other prefixes: map them with a categories list in the config
    cfg_path = data / "expansion.yaml"
    cfg = _cfg(data, "expansion", [{"name": "real", "real": True},
                                    {"name": "real+6", "real": True, "generated": [{"dir": str(data / "gen_exp"), "n": 6}]}],
               "1:5")
    cfg.categories = [{"name": "inclusion", "prefix": "In", "index": 1}, {"name": "patches", "prefix": "Pa", "index": 2},
                      {"name": "scratches", "prefix": "Sc", "index": 3}, {"name": "gen_in", "prefix": "GenIn", "index": 4},
                      {"name": "gen_pa", "prefix": "GenPa", "index": 5}, {"name": "gen_sc", "prefix": "GenSc", "index": 6}]
    OmegaConf.save(cfg, cfg_path)
    with pytest.raises(SystemExit) as code:
        run_cli(lambda: protocols_main(["run", "--config", str(cfg_path), "--no_progress"]))
    assert code.value.code == 0
    table = list(csv.DictReader((data / "out_expansion" / "results.csv").open()))
    split = load_split(data / "split_1-5.json")
    assert len(split["train"]) == 3 and len(split["test"]) == 15
    assert [(t["setting"], t["n_train"], t["n_generated"]) for t in table] == [("real", "3", "0"), ("real+6", "9", "6")]
    assert "Table 8" in (data / "out_expansion" / "results.md").read_text()
    # asking for more generated pairs than exist is a one-line error
    with pytest.raises(SystemExit) as code:
        run_cli(lambda: protocols_main(["run", "--config", str(cfg_path), "--set", "settings.1.generated.0.n=50"]))
    assert code.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "n = 50" in err[-1]


def test_train_predict_resume_and_filter_with_real_detector(data, tmp_path):
    from dataset.pairs import find_pairs
    from evaluation.detector.predict import Detector, select_images, write_maps
    from evaluation.detector.train import train_detector
    from evaluation.sample_filter import main as filter_main

    cfg = load_config(None, "configs/eval/detector.yaml", TINY + ["train.epochs=2"])
    pairs = find_pairs(data / "real")[:6]
    cfg1 = OmegaConf.merge(cfg, {"train": {"epochs": 1}})
    train_detector(cfg1, pairs, tmp_path / "det", progress=False, log=lambda m: None)
    logs = []
    ckpt = train_detector(cfg, pairs, tmp_path / "det", resume=True, progress=False, log=logs.append)
    assert any("resume" in m and "epoch 1" in m for m in logs)
    assert any(m.startswith("epoch 2/2") for m in logs) and not any(m.startswith("epoch 1/2") for m in logs)
    det = Detector(ckpt)
    write_maps(det, select_images(data / "real", [p.stem for p in pairs]), tmp_path / "maps", progress=False,
               log=lambda m: None)
    maps = sorted((tmp_path / "maps").glob("*.png"))
    assert len(maps) == 6 and Image.open(maps[0]).size == (40, 40) and Image.open(maps[0]).mode == "L"
    with pytest.raises(SystemExit) as code:
        run_cli(lambda: filter_main(["--ckpt", str(ckpt), "--generated", str(data / "real"),
                                     "--out", str(tmp_path / "kept"), "--threshold", "0"]))
    assert code.value.code == 0
    assert len(list((tmp_path / "kept" / "Source_Images").iterdir())) == 18
    with pytest.raises(UserError, match="checkpoint not found"):
        Detector(tmp_path / "missing.pt")


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    from evaluation.detector.predict import main as predict_main
    from evaluation.detector.train import main as train_main

    (tmp_path / "empty").mkdir()
    cases = [
        (train_main, ["--data_root", str(tmp_path / "nope"), "--out", str(tmp_path / "o")], "not found"),
        (train_main, ["--data_root", str(tmp_path), "--out", str(tmp_path / "o"), "--config",
                      str(tmp_path / "missing.yaml")], "config file not found"),
        (predict_main, ["--ckpt", str(tmp_path / "x.pt"), "--images", str(tmp_path / "empty"),
                        "--out", str(tmp_path / "m")], "checkpoint not found"),
        (protocols_main, ["run", "--config", str(tmp_path / "missing.yaml")], "config file not found"),
    ]
    for main, argv, expect in cases:
        with pytest.raises(SystemExit) as code:
            run_cli(lambda: main(argv))
        assert code.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and expect in err and len(err.splitlines()) == 1, err


def test_fair_expansion_beside_the_plain_table_with_paired_differences(data):
    """A real_share setting: same steps and warm-up as the others, its own table in results.md, and every
    setting paired with the real-only baseline per detector seed (per-image S stored per run)."""
    import json

    write_procedural_dataset(data / "gen_fair", 2, size=40, seed=7)
    gen = [{"dir": str(data / "gen_fair"), "n": 6}]
    cfg = _cfg(data, "expansion", [{"name": "real", "real": True}, {"name": "real+6", "real": True, "generated": gen},
                                    {"name": "real+6 fair", "real": True, "real_share": 0.5, "generated": gen}],
               "1:5", [f"out={data / 'out_fair'}"])
    cfg.detectors = [{"name": f"seed{s}", "config": None, "overrides": [f"train.seed={s}"]} for s in (0, 1)]
    cfg.detector_overrides = [*TINY, "train.min_steps=3"]
    rows = run_protocol(cfg, progress=False, log=lambda m: None)
    assert {(r["steps"], r["warmup_steps"]) for r in rows} == {(3, 3)}, rows
    out = data / "out_fair"
    md = (out / "results.md").read_text()
    plain_part, fair_part = md.split("## Real pairs at a fixed share of every batch")
    assert "real+6 fair" not in plain_part and "| real+6 fair |" in fair_part and "| real |" in fair_part
    assert "## Paired differences against `real`" in fair_part
    result = json.loads((out / "results.json").read_text())
    assert result["baseline"] == "real" and [p["setting"] for p in result["paired"]] == ["real+6", "real+6 fair"]
    s = {(r["detector"], r["setting"]): r["S"] for r in rows}
    for p in result["paired"]:
        assert p["per_seed"] == pytest.approx({d: s[d, p["setting"]] - s[d, "real"] for d in ("seed0", "seed1")})
        assert p["n_images"] == 15 and p["ci_low"] <= p["mean"] <= p["ci_high"]
    per_image = json.loads((out / "seed1" / "real+6_fair" / "per_image_S.json").read_text())
    assert len(per_image) == 15 and np.mean(list(per_image.values())) == pytest.approx(s["seed1", "real+6 fair"])
    assert [r["real_share"] for r in csv.DictReader((out / "results.csv").open())] == ["", "", "0.500000"] * 2


@pytest.mark.parametrize("setting,expect", [
    ({"real_share": "nan"}, "between 0 and 1"), ({"real_share": 1.0}, "between 0 and 1"),
    ({"real_share": 0}, "between 0 and 1"), ({"real_share": 0.5, "generated": []}, "needs real: true")])
def test_bad_real_share_in_a_protocol_setting_is_one_line(data, tmp_path, capsys, setting, expect):
    gen = [{"dir": str(data / "real"), "n": 1}]
    cfg = _cfg(data, "expansion", [{"name": "real", "real": True},
                                    {"name": "fair", "real": True, "generated": gen, **setting}], "1:5",
               [f"out={tmp_path / 'out'}"])
    OmegaConf.save(cfg, tmp_path / "p.yaml")
    capsys.readouterr()
    with pytest.raises(SystemExit) as code:
        run_cli(lambda: protocols_main(["run", "--config", str(tmp_path / "p.yaml")]))
    err = capsys.readouterr().err.strip()
    assert code.value.code == 2 and len(err.splitlines()) == 1 and expect in err and "'fair'" in err, err
    assert not (tmp_path / "out").exists()


def test_detector_runs_trained_side_by_side_match_runs_trained_one_after_another(data, tmp_path):
    detectors = [{"name": f"seed{s}", "config": None, "overrides": [f"train.seed={s}"]} for s in (0, 1)]
    settings = [{"name": "real", "real": True}]
    rows = {}
    for jobs in (1, 2):
        cfg = _cfg(data, "substitution", settings, "9:1", [f"out={tmp_path / f'jobs{jobs}'}", f"jobs={jobs}"])
        cfg.detectors = detectors
        logs = []
        rows[jobs] = run_protocol(cfg, progress=False, log=logs.append)
        assert any("2 at a time in worker processes" in m for m in logs) == (jobs == 2)
    for serial, parallel in zip(rows[1], rows[2]):
        assert serial["detector"] == parallel["detector"]
        assert serial["S"] == pytest.approx(parallel["S"], abs=1e-6)
        assert parallel["train_minutes"] is not None
    assert rows[2][0]["S"] != rows[2][1]["S"]  # the seeds really differ: the runs are not one run copied


@pytest.mark.parametrize("jobs, expect", [("0", "jobs must be a whole number >= 1"),
                                          ("two", "'jobs' must be an integer")])
def test_bad_jobs_is_one_line(data, tmp_path, capsys, jobs, expect):
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"protocol: substitution\ndata_root: {data / 'real'}\nratio: '9:1'\nout: {tmp_path / 'o'}\n"
                   f"jobs: {jobs}\nsettings: [{{name: real, real: true}}]\n")
    with pytest.raises(SystemExit) as code:
        run_cli(lambda: protocols_main(["run", "--config", str(cfg)]))
    assert code.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expect in err, err
