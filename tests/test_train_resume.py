"""Auto-resume: a run stopped at a checkpoint and started again ends where an uninterrupted run ends."""
from __future__ import annotations

import json

import pytest
import torch
from train_helpers import make_trainer, tiny_train_config

from training.checkpointing import load_state


def _weights(trainer) -> dict[str, torch.Tensor]:
    return {f"{part}.{k}": v.detach().clone() for part, m in trainer.models.parts().items()
            for k, v in m.state_dict().items()}


def _flat_optimizer(state: dict) -> list:
    out = []
    for pid in sorted(state["state"]):
        for key in sorted(state["state"][pid]):
            out.append((pid, key, state["state"][pid][key]))
    return out


def _assert_same_optimizer(a: dict, b: dict) -> None:
    fa, fb = _flat_optimizer(a), _flat_optimizer(b)
    assert [(p, k) for p, k, _ in fa] == [(p, k) for p, k, _ in fb]
    for (_, key, va), (_, _, vb) in zip(fa, fb):
        assert torch.equal(torch.as_tensor(va), torch.as_tensor(vb)), key
    assert a["param_groups"] == b["param_groups"]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return tiny_train_config(tmp_path_factory.mktemp("cfg"), enable_ema=True, ema_rate=0.5,
                             null_grounding_prob=0.5)


def test_resumed_run_matches_uninterrupted_run(config, tmp_path):
    # uninterrupted: 4 iterations, checkpoints at 2 and 4
    full = make_trainer(config, tmp_path, "full", "--total_iters", "4", "--save_every_iters", "2")
    assert full.train() == 4
    final_full = _weights(full)

    # interrupted: stops after iteration 2 (its last checkpoint) ...
    first = make_trainer(config, tmp_path, "split", "--total_iters", "2", "--save_every_iters", "2")
    assert first.train() == 2
    # ... and the same command with more iterations resumes from it, here with a loader worker
    resumed = make_trainer(config, tmp_path, "split", "--total_iters", "4", "--save_every_iters", "2",
                           "--workers", "1")
    assert resumed.iteration == 2
    assert resumed.scheduler.last_epoch == 2
    saved_at_2 = load_state(tmp_path / "full" / "checkpoints" / "state_00000002.json")
    assert saved_at_2["iteration"] == 2
    _assert_same_optimizer(resumed.optimizer.state_dict(), saved_at_2["optimizer"])
    assert resumed.train() == 4
    final_resumed = _weights(resumed)

    assert final_full.keys() == final_resumed.keys()
    different = [k for k in final_full if not torch.equal(final_full[k], final_resumed[k])]
    assert not different, f"weights differ after resume: {different[:5]}"
    assert json.loads((tmp_path / "split" / "latest.json").read_text())["iteration"] == 4
    for name, value in full.ema.shadow.items():  # the EMA resumed too
        assert torch.equal(value, resumed.ema.shadow[name]), name
    _assert_same_optimizer(resumed.optimizer.state_dict(), full.optimizer.state_dict())

    # infer.py's loader overlays the saved EMA on the UNet (mask-encoder names differ from timm's)
    from ldm.checkpoint import load_models
    from training.trainer import checkpoint_names

    ema_models = load_models(tmp_path / "full" / "checkpoints" / "latest.safetensors", weights="ema")
    loaded = ema_models.model.state_dict()
    names = checkpoint_names(full.unet)
    assert any(names[n] != n for n in full.ema.shadow)  # the renaming is exercised
    for name, value in full.ema.shadow.items():
        assert torch.equal(loaded[names[name]], value), name


def test_finished_run_is_not_trained_again(config, tmp_path, capsys):
    first = make_trainer(config, tmp_path, "done", "--total_iters", "1")
    first.train()
    again = make_trainer(config, tmp_path, "done", "--total_iters", "1")
    assert again.iteration == 1 and again.train() == 1
    assert "already trained" in capsys.readouterr().out


def test_a_run_saved_with_a_legacy_state_pt_resumes_exactly(config, tmp_path):
    """A legacy state_N.pt is read weights-only; the run continues in safetensors + JSON."""
    full = make_trainer(config, tmp_path, "full", "--total_iters", "4", "--save_every_iters", "2")
    full.train()
    make_trainer(config, tmp_path, "old", "--total_iters", "2", "--save_every_iters", "2").train()
    run, ckpt = tmp_path / "old", tmp_path / "old" / "checkpoints"
    state = load_state(ckpt / "state_00000002.json")
    torch.save({**state, "version": 1}, ckpt / "state_00000002.pt")
    for name in ("state_00000002.json", "state_00000002.safetensors"):
        (ckpt / name).unlink()
    pointer = json.loads((run / "latest.json").read_text())
    (run / "latest.json").write_text(json.dumps({**pointer, "state": "checkpoints/state_00000002.pt"}))
    resumed = make_trainer(config, tmp_path, "old", "--total_iters", "4", "--save_every_iters", "2")
    assert resumed.iteration == 2 and resumed.train() == 4
    final_full, final_resumed = _weights(full), _weights(resumed)
    assert not [k for k in final_full if not torch.equal(final_full[k], final_resumed[k])]
    assert json.loads((run / "latest.json").read_text())["state"] == "checkpoints/state_00000004.json"
    assert load_state(ckpt / "state_00000004.json")["trainer"] == "main"
