"""Guidance sweep with a fake generator and a small random feature extractor."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from dataset.procedural import write_procedural_dataset
from evaluation.guidance_sweep import main as sweep_main
from evaluation.guidance_sweep import run_sweep
from runtime.errors import UserError, run_cli


class CountingExtractor:
    """A small random CNN in place of Inception (uint8 N x 3 x H x W -> N x 8)."""

    name = "test-random-cnn-sweep"

    def __init__(self):
        import torch

        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(),
                                       torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())

    def __call__(self, images):
        import torch

        with torch.no_grad():
            return self.net(images.float() / 255.0)


def fake_generator(calls):
    """Writes one 'generated' image per mask; brightness drifts away from real as |w - 3| grows."""
    def generate(scale, out_dir, mask_dir):
        calls.append((scale, sorted(p.name for p in mask_dir.iterdir())))
        (out_dir / "Source_Images").mkdir(parents=True, exist_ok=True)
        (out_dir / "Ground_truth").mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(int(scale * 10))
        for mask in sorted(mask_dir.iterdir()):
            arr = np.clip(rng.normal(110 + 25 * abs(scale - 3), 25, (40, 40)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(out_dir / "Source_Images" / mask.name)
            Image.open(mask).save(out_dir / "Ground_truth" / mask.name)
    return generate


def test_sweep_table_with_fake_generator(tmp_path):
    write_procedural_dataset(tmp_path / "real", 8, size=40, seed=1)
    cfg = OmegaConf.create({"real": str(tmp_path / "real"), "category": "patches", "mask_dir": None,
                            "scales": [1, 3, 5, 9], "ckpt": None, "out": str(tmp_path / "sweep"),
                            "fid": {"cache_dir": str(tmp_path / "cache"), "kid_subsets": 5}})
    calls = []
    rows = run_sweep(cfg, extractor=CountingExtractor(), generate=fake_generator(calls), progress=False,
                     log=lambda m: None)
    assert [c[0] for c in calls] == [1.0, 3.0, 5.0, 9.0]
    assert calls[0][1] == [f"Pa_{i}.png" for i in (1, 2, 3, 4, 5, 6, 7, 8)]  # only the category's masks
    assert [r["guidance"] for r in rows] == [1.0, 3.0, 5.0, 9.0]
    assert all(r["n_real"] == 8 and r["n_fake"] == 8 for r in rows)
    fids = {r["guidance"]: r["FID"] for r in rows}
    assert fids[3.0] < fids[1.0] and fids[3.0] < fids[5.0] < fids[9.0]
    table = list(csv.DictReader((tmp_path / "sweep" / "sweep.csv").open()))
    assert [float(t["guidance"]) for t in table] == [1.0, 3.0, 5.0, 9.0]
    assert "Table 2" in (tmp_path / "sweep" / "sweep.md").read_text()
    assert (tmp_path / "sweep" / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_sweep_errors(tmp_path, capsys):
    write_procedural_dataset(tmp_path / "real", 2, size=24, seed=1)
    base = {"real": str(tmp_path / "real"), "category": "rust", "scales": [3], "out": str(tmp_path / "o")}
    with pytest.raises(UserError, match="category 'rust' unknown"):
        run_sweep(OmegaConf.create(base), extractor=CountingExtractor(), generate=fake_generator([]))
    # CLI without a checkpoint: one line naming the fix
    with pytest.raises(SystemExit) as code:
        run_cli(lambda: sweep_main(["--set", f"real={tmp_path / 'real'}", f"out={tmp_path / 'o'}", "ckpt=null"]))
    assert code.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "ckpt=PATH" in err and len(err.splitlines()) == 1


def test_sweep_generates_in_process_with_one_model_load(tmp_path, monkeypatch):
    import json

    import evaluation.guidance_sweep as gs
    from tools.tiny_model import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "tiny.safetensors")
    write_procedural_dataset(tmp_path / "real", 3, size=32, seed=1)
    loads = []
    real_load = gs.load_pipeline
    monkeypatch.setattr(gs, "load_pipeline", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    cfg = OmegaConf.create({"real": str(tmp_path / "real"), "category": "patches", "mask_dir": None,
                            "scales": [1, 4], "ckpt": str(ckpt), "out": str(tmp_path / "sweep"),
                            "infer": {"steps": 2, "batch_size": 4, "device": "cpu", "seed": 3},
                            "fid": {"cache_dir": str(tmp_path / "cache"), "kid_subsets": 2}})
    rows = run_sweep(cfg, extractor=CountingExtractor(), progress=False, log=lambda m: None)
    assert len(loads) == 1 and [r["n_fake"] for r in rows] == [3, 3]
    for w in (1, 4):
        record = json.loads((tmp_path / "sweep" / f"w{w}" / "generation.json").read_text())
        assert record["settings"]["guidance_scale"] == w and len(record["images"]) == 3


@pytest.mark.parametrize("change, message", [
    ({"scales": [3, float("nan")]}, "scales must be finite"),
    ({"scales": [float("inf")]}, "scales must be finite"),
    ({"infer": {"sampel": "plms"}}, "infer.sampel .*did you mean 'sampler'"),
    ({"infer": {"steps": 0}}, "--steps must be >= 1"),
])
def test_sweep_refuses_bad_settings_before_generating(tmp_path, change, message):
    write_procedural_dataset(tmp_path / "real", 2, size=24, seed=1)
    (tmp_path / "ckpt.safetensors").write_bytes(b"")
    cfg = OmegaConf.create({"real": str(tmp_path / "real"), "category": "patches", "scales": [3],
                            "ckpt": str(tmp_path / "ckpt.safetensors"), "out": str(tmp_path / "o"),
                            "fid": {"cache_dir": str(tmp_path / "cache")}, **change})
    with pytest.raises(UserError, match=message):
        run_sweep(cfg, extractor=CountingExtractor(), progress=False, log=lambda m: None)
    assert not (tmp_path / "o" / "w3").exists()
