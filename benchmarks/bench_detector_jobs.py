#!/usr/bin/env python
"""Detector runs side by side: wall time of ``--runs`` detector trainings one after another with all the
threads vs ``--jobs`` at a time in worker processes with the threads shared out, in one run.

    python benchmarks/bench_detector_jobs.py --data_root ../shared/data/SD-saliency-900 --pairs 160 --epochs 2

Each run is the study's detector (``configs/eval/detector.yaml``, MSINet at 128 px) on the first ``--pairs``
pairs of the folder with its own seed; both ways train the same runs (``evaluation.protocols.train_run``,
the study's code path). Without ``--data_root`` a procedural dataset is written to a temporary folder.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from dataset.pairs import find_pairs
from dataset.procedural import write_procedural_dataset
from evaluation.detector.train import DEFAULT_CONFIG
from evaluation.protocols import train_run
from runtime.cli import positive_int
from runtime.configs import load_config
from runtime.parallel import run_jobs


def quiet(message: str) -> None:
    """The runs' log (dropped: only the wall times matter here)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_root", help="a dataset folder (default: procedural pairs in a temporary folder)")
    parser.add_argument("--pairs", type=positive_int, default=160, help="training pairs per run (default 160)")
    parser.add_argument("--epochs", type=positive_int, default=2, help="epochs per run (default 2)")
    parser.add_argument("--runs", type=positive_int, default=2, help="detector runs (default 2)")
    parser.add_argument("--jobs", type=positive_int, default=2, help="runs at a time (default 2)")
    parser.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1,
                        help="threads in all (default: the machine's cores)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data_root) if args.data_root else Path(tmp) / "data"
        if not args.data_root:
            write_procedural_dataset(root, -(-args.pairs // 3), size=200, seed=0)
        pairs = find_pairs(root)[: args.pairs]
        per_job = max(1, args.threads // args.jobs)
        times = {}
        for label, jobs, threads in (("one after another", 1, args.threads), ("side by side", args.jobs, per_job)):
            calls = []
            for seed in range(args.runs):
                cfg = load_config(None, DEFAULT_CONFIG, [f"train.epochs={args.epochs}", f"train.seed={seed}",
                                                         f"train.num_threads={threads}", "train.device=cpu"])
                run_dir = Path(tmp) / f"{label.replace(' ', '_')}_{seed}"
                calls.append((cfg, pairs, run_dir, len(pairs), {}, False, quiet))
            start = time.perf_counter()
            run_jobs(train_run, calls, jobs, threads)
            times[label] = (time.perf_counter() - start, jobs, threads)
    base = times["one after another"][0]
    print(f"{args.runs} detector runs, {len(pairs)} pairs x {args.epochs} epochs each, {args.threads} threads in all "
          f"({os.cpu_count()} cores)")
    print("| way | runs at a time x threads | wall time | speed-up |")
    print("|---|---|---|---|")
    for label, (seconds, jobs, threads) in times.items():
        print(f"| {label} | {jobs} x {threads} | {seconds:.1f} s | {base / seconds:.2f}x |")


if __name__ == "__main__":
    main()
