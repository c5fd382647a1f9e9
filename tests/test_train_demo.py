"""The README's demo (configs/demo.yaml): from scratch on procedural defects, the loss falls fast."""
from __future__ import annotations

import json

from train_helpers import REPO, make_trainer

DEMO = REPO / "configs" / "demo.yaml"


def test_demo_loss_falls_clearly_over_its_first_steps(tmp_path):
    # measured (10-step means): 0.91, 0.72, 0.47, 0.20, 0.08 over the first 50 steps, then about 0.07; the first
    # four are the same in a 40-step run (the warm-up is 100 steps)
    steps = 40
    tr = make_trainer(DEMO, tmp_path, "demo", "--total_iters", str(steps), "--workers", "0",
                      "--disable_inference_in_training", "--save_every_iters", str(steps))
    assert tr.opts.trainable == "all" and tr.opts.ckpt is None  # the demo trains from scratch
    assert tr.train() == steps
    logged = [json.loads(line) for line in (tmp_path / "demo" / "metrics.jsonl").read_text().splitlines()]
    losses = [entry["loss"] for entry in logged]  # each the mean over log_every iterations
    assert len(losses) == steps // tr.opts.log_every
    first, last = losses[0], sum(losses[-2:]) / 2
    assert last < 0.5 * first, f"loss went from {first:.3f} to {last:.3f}"
    assert (tmp_path / "demo" / "checkpoints" / f"ckpt_{steps:08d}.safetensors").is_file()
    # held-out procedural masks for the README's infer.py command
    masks = sorted(p.name for p in (tmp_path / "demo" / "procedural" / "Ground_truth").iterdir())
    assert len(masks) == 24 and masks[0] == "In_1.png"
