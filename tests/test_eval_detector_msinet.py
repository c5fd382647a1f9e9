"""The from-scratch MSINet detector and validation-based schedule choice: built from the config, its size and
output shapes, learning on a tiny set, the validation carve, keep_best picking the best validation epoch, scores
that match sod_eval on written maps, and bad config values as one line."""
from __future__ import annotations

import pytest
import torch

from dataset.procedural import write_procedural_dataset
from evaluation.detector import train as train_mod
from evaluation.detector.model import SaliencyUNet, build_model
from evaluation.detector.msinet import MSINet
from evaluation.detector.runs import read_detector, run_summary
from evaluation.detector.train import DEFAULT_CONFIG, deep_supervision_loss, train_detector
from evaluation.detector.validation import ValidationSet, carve_pairs
from runtime.configs import load_config
from runtime.errors import UserError, run_cli
from training.jsonl_log import read_log

TINY = ["data.image_size=32", "train.device=cpu", "train.batch_size=4", "train.augment=false", "train.num_threads=1"]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """10 procedural pairs per category at 32 px."""
    return write_procedural_dataset(tmp_path_factory.mktemp("msinet") / "pairs", 10, size=32, seed=1)


def _cfg(*over: str):
    return load_config(DEFAULT_CONFIG, DEFAULT_CONFIG, [*TINY, *over])


def test_default_config_builds_msinet_of_the_papers_size_class():
    model = build_model(_cfg().model)
    n = sum(p.numel() for p in model.parameters())
    assert isinstance(model, MSINet) and 0.2e6 < n < 0.4e6, n


def test_forward_shapes_and_side_outputs():
    model = build_model(_cfg().model).eval()
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        outs = model.forward_all(x)
        assert len(outs) == 5 and all(o.shape == (2, 1, 40, 56) for o in outs)
        assert torch.allclose(model(x), outs[0], atol=1e-6)


def test_unet_stays_selectable():
    model = build_model(_cfg("model.arch=unet", "model.encoder=test_resnet",
                             "model.decoder_channels=[16,16,16,16]").model).eval()
    assert isinstance(model, SaliencyUNet)
    with torch.no_grad():
        assert [o.shape for o in model.forward_all(torch.zeros(1, 3, 32, 32))] == [(1, 1, 32, 32)]


def test_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = build_model(_cfg().model)
    x = torch.randn(4, 3, 32, 32)
    y = torch.zeros(4, 1, 32, 32)
    y[:, :, 8:20, 10:24] = 1.0
    x = x + 2.0 * y  # the "defect" is brighter than its surroundings
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = deep_supervision_loss(model.forward_all(x), y, side_weight=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


def test_side_weight_adds_the_side_losses():
    y = torch.zeros(1, 1, 8, 8)
    main, side = torch.zeros(1, 1, 8, 8), torch.full((1, 1, 8, 8), 3.0)
    alone = deep_supervision_loss([main, side], y, side_weight=0.0)
    both = deep_supervision_loss([main, side], y, side_weight=0.5)
    assert both > alone and torch.isclose(both - alone, 0.5 * deep_supervision_loss([side], y))


def test_validation_carve_is_stratified_and_disjoint(pairs):
    train, val = carve_pairs(pairs, 0.2, 0)
    assert len(train) + len(val) == len(pairs) and not {p.stem for p in train} & {p.stem for p in val}
    assert sorted(p.category.name for p in val) == sorted([c for c in {p.category.name for p in pairs}] * 2)
    assert [p.stem for p in carve_pairs(pairs, 0.2, 0)[1]] == [p.stem for p in val]
    assert {p.stem for p in carve_pairs(pairs, 0.2, 1)[1]} != {p.stem for p in val}
    with pytest.raises(UserError, match="both need at least one"):
        carve_pairs(pairs[:2], 0.1, 0)


def test_keep_best_keeps_the_best_validation_epoch(pairs, tmp_path, monkeypatch):
    """Scripted validation S 0.5, 0.7, 0.6: detector.pt holds the weights scored at epoch 2, not the last ones."""
    scripted, seen = iter([0.5, 0.7, 0.6]), []

    def fake_score(self, model, device="cpu", batch_size=32):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {"S": next(scripted), "MAE": 0.1, "E_max": 0.5, "F_max": 0.5}

    monkeypatch.setattr(ValidationSet, "score", fake_score)
    cfg = _cfg("train.epochs=3", "train.val_fraction=0.2", "train.keep_best=true")
    final = train_detector(cfg, pairs, tmp_path / "d", log=lambda m: None, progress=False)
    log = run_summary(tmp_path / "d")
    assert log["selected_epoch"] == 2 and log["n_val"] == 6 and log["n_train"] == 24
    assert [h["val_S"] for h in read_log(tmp_path / "d" / "metrics.jsonl")] == [0.5, 0.7, 0.6]
    saved = read_detector(final)
    assert final.name == "detector.safetensors" and saved["epochs"] == 2
    for key, value in saved["model"].items():
        assert torch.equal(value, seen[1][key]), key
    assert any(not torch.equal(saved["model"][k], seen[2][k]) for k in saved["model"])


def test_validation_scores_match_sod_eval_on_written_maps(pairs, tmp_path):
    """The score a schedule is chosen on is the one evaluation.sod_eval gives the predicted maps."""
    from evaluation.detector.predict import Detector, write_maps
    from evaluation.sod_eval import evaluate_folders

    cfg = _cfg("train.epochs=1", "train.val_fraction=0.2")
    final = train_detector(cfg, pairs, tmp_path / "d", log=lambda m: None, progress=False)
    log = run_summary(tmp_path / "d")
    _, val = carve_pairs(pairs, 0.2, 0)
    assert sorted(log["val_stems"]) == sorted(p.stem for p in val)
    maps = write_maps(Detector(final, "cpu"), [p.image for p in val], tmp_path / "maps", progress=False,
                      log=lambda m: None)
    gt = tmp_path / "gt"
    gt.mkdir()
    for p in val:
        (gt / p.mask.name).write_bytes(p.mask.read_bytes())
    overall = evaluate_folders(maps, gt)["overall"]
    for metric in ("S", "MAE", "E_max", "F_max"):
        assert read_log(tmp_path / "d" / "metrics.jsonl")[-1][f"val_{metric}"] == pytest.approx(overall[metric],
                                                                                             abs=1e-6), metric


def test_resume_refuses_another_architecture(pairs, tmp_path):
    train_detector(_cfg("train.epochs=1"), pairs, tmp_path / "d", log=lambda m: None, progress=False)
    with pytest.raises(UserError, match="model.arch 'msinet' -> 'unet'"):
        train_detector(_cfg("train.epochs=2", "model.arch=unet", "model.encoder=test_resnet"), pairs,
                       tmp_path / "d", resume=True, log=lambda m: None, progress=False)


@pytest.mark.parametrize("override, message", [
    ("model.arch=resnet", "model.arch must be one of msinet, unet, got 'resnet'"),
    ("model.widths=[16,30,64,96,128]", "model.widths [30] do not split into 4 dilation groups"),
    ("model.depths=[0,3,4]", "model.widths and model.depths need the same length"),
    ("model.depths=[0,3,-1,6,3]", "model.depths entry must be a finite number >= 0"),
    ("model.dilations=[]", "model.dilations needs at least one entry"),
    ("train.keep_best=true", "train.keep_best needs validation pairs"),
    ("train.val_fraction=1.5", "train.val_fraction must be a finite number >= 0 and <= 0.9"),
    ("train.val_every=0", "train.val_every must be a finite number >= 1"),
    ("train.side_weight=nan", "train.side_weight must be a finite number >= 0"),
])
def test_bad_values_are_one_line(tmp_path, capsys, override, message):
    argv = ["--data_root", str(tmp_path / "none"), "--out", str(tmp_path / "d"), "--no_progress", "--set",
            *TINY, override]
    capsys.readouterr()
    with pytest.raises(SystemExit) as code:
        run_cli(lambda: train_mod.main(argv))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert message in lines[0], lines[0]
    assert not (tmp_path / "d").exists()
