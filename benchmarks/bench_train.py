#!/usr/bin/env python
"""Training speed and memory of a config: seconds per iteration and peak RSS, with and without
gradient checkpointing, each setting in a fresh process (peak RSS is per process).

    python -m benchmarks.bench_train                                   # full DefFiller config, batch 2
    python -m benchmarks.bench_train --config configs/demo.yaml --batch_size 8 --iters 20
    python -m benchmarks.bench_train --data_root ../shared/data/SD-saliency-900 --threads 1

Weights are random (timing does not depend on their values; the zero-initialised output layers are
randomised so that every trained parameter gets a gradient, as from the GLIGEN-sem release). Data:
--data_root, else the config's procedural generator, else procedural defects at the config's size.
Prints one JSON line per setting: wall and CPU seconds per iteration (median after --warmup
iterations), peak RSS of the process, and the machine's load average.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from runtime.cli import add_config, add_data_root, add_threads, non_negative_int, positive_int  # noqa: E402


def child(args: argparse.Namespace) -> None:
    import torch
    from omegaconf import OmegaConf

    from ldm.config import load_config
    from runtime import distributed as D
    from training import trainer as trainer_module
    from training.options import parse_args, resolve_options

    def random_weights(models, ckpt):
        torch.manual_seed(0)
        with torch.no_grad():
            for p in models.model.parameters():
                if p.is_floating_point() and not p.any():
                    p.normal_(0, 0.02)
        return "random weights (benchmark)"

    trainer_module.initial_weights = random_weights
    cfg = load_config(args.config)
    if args.data_root is None and cfg.get("data", {}).get("procedural") is None:
        cfg.data = OmegaConf.merge(cfg.get("data", {}), {"procedural": {"n_per_category": 20}})
    with tempfile.TemporaryDirectory() as out:
        argv = ["--yaml_file", str(args.config), "--OUTPUT_ROOT", out, "--name", "bench", "--ckpt", "random",
                "--batch_size", str(args.batch_size), "--workers", "0", "--trainable", args.trainable,
                "--total_iters", str(args.warmup + args.iters), "--save_every_iters", "1000000",
                "--disable_inference_in_training", "--gradient_checkpointing", args.checkpointing,
                "--precision", args.precision, "--device", "cpu"]
        if args.data_root:
            argv += ["--DATA_ROOT", str(args.data_root)]
        opts = resolve_options(parse_args(argv), cfg)
        if args.threads:
            torch.set_num_threads(args.threads)
        tr = trainer_module.Trainer(opts, cfg, D.DistInfo())
        tr.checkpoints.save = lambda *a, **k: None  # time the steps, not the final checkpoint write
        tr._save = lambda: None
        times = []
        real = tr._optimizer_step

        def timed_step():
            value = real()
            times.append((time.perf_counter(), time.process_time()))
            return value

        tr._optimizer_step = timed_step
        start = (time.perf_counter(), time.process_time())
        tr.train()
    marks = [start] + times
    wall = [b[0] - a[0] for a, b in zip(marks, marks[1:])][args.warmup:]
    cpu = [b[1] - a[1] for a, b in zip(marks, marks[1:])][args.warmup:]
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    print(json.dumps({
        "config": str(args.config), "batch_size": args.batch_size, "gradient_checkpointing": args.checkpointing,
        "precision": args.precision, "trainable": args.trainable, "threads": torch.get_num_threads(),
        "iters": len(wall), "wall_s_per_it_median": round(med(wall), 3), "wall_s_per_it": [round(w, 2) for w in wall],
        "cpu_s_per_it_median": round(med(cpu), 3),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2),
        "loadavg_1m": os.getloadavg()[0]}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config(p, str(ROOT / "configs" / "sd_saliency_900.yaml"), help="training config")
    add_data_root(p, help="real dataset (default: the config's procedural generator)")
    p.add_argument("--batch_size", type=positive_int, default=2, help="images per step (default: 2)")
    p.add_argument("--iters", type=positive_int, default=3, help="timed steps (default: 3)")
    p.add_argument("--warmup", type=non_negative_int, default=1, help="untimed steps first (default: 1)")
    add_threads(p)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="training precision")
    p.add_argument("--trainable", default="grounding", help="train.trainable: grounding (the paper's) or all")
    p.add_argument("--checkpointing", default="both", choices=["both", "true", "false"],
                   help="gradient checkpointing on, off or both (one row each)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    for setting in (["true", "false"] if args.checkpointing == "both" else [args.checkpointing]):
        cmd = [sys.executable, "-m", "benchmarks.bench_train", "--child", "--checkpointing", setting,
               "--config", str(args.config),
               "--batch_size", str(args.batch_size), "--iters", str(args.iters), "--warmup", str(args.warmup),
               "--threads", str(args.threads), "--precision", args.precision, "--trainable", args.trainable]
        if args.data_root:
            cmd += ["--data_root", str(args.data_root)]
        subprocess.run(cmd, check=True, cwd=ROOT)

if __name__ == "__main__":
    main()
