#!/usr/bin/env python
"""Generation for a study: images/s of a trained checkpoint under several sampling settings, in one run.

    python benchmarks/bench_study_generation.py --ckpt models/sd900_vpred.safetensors \
        --mask_dir DATA/val0_masks --masks 54 --threads 2 [--steps 16 --guidance_interval 10 900]

Each setting (sampler, steps, guidance, UNet memory format, precision) generates the same masks with the same
seeds through ``inference.generate.generate_batch`` (no file I/O); the first batch of each setting
is a warm-up and is not timed. Settings run interleaved, ``--repeats`` times, and the fastest pass
counts. The table gives images/s, the ratio to the first setting and the minutes a study's ``--pairs``
generated pairs would take. ``--steps`` / ``--guidance_interval`` add a row: the recommendation with those
(channels_last, fp32); ``--student`` adds a row: a distilled student's recommendation (channels_last, fp32).
The bf16 row runs only where the CPU computes bf16 natively
(:func:`runtime.device.cpu_has_bf16`). Without ``--ckpt`` a tiny random-weight model is made (only the overheads).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from dataset.categories import categories_from_config
from inference.generate import GenerationOptions, generate_batch, recommended_sampling
from inference.jobs import build_jobs, mask_tensor
from ldm.checkpoint import load_models
from ldm.pipeline import DefFillerPipeline
from runtime.cli import add_threads, positive_int
from runtime.device import cpu_has_bf16
from runtime.errors import run_cli
from tools.tiny_model import make_tiny_checkpoint, write_masks

# label: sampler, steps, guidance scale, guidance interval, (channels_last, precision); None: the checkpoint's
# recommendation
SETTINGS = {
    "study (unipc 10, g2, NCHW)": ("unipc", 10, 2.0, None, (False, "fp32")),
    "unipc 10, g3, channels_last": ("unipc", 10, 3.0, None, (True, "fp32")),
    "recommended, NCHW": (None, None, None, None, (False, "fp32")),
    "recommended, channels_last": (None, None, None, None, (True, "fp32")),
    "recommended, channels_last, bf16": (None, None, None, None, (True, "bf16")),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def settings(args: argparse.Namespace) -> dict:
    """The rows to run: :data:`SETTINGS` (bf16 only where the CPU has it) and the ``--steps`` /
    ``--guidance_interval`` row."""
    rows = {k: v for k, v in SETTINGS.items() if v[-1][1] != "bf16" or cpu_has_bf16()}
    if args.steps or args.guidance_interval:
        lo_hi = "-".join(map(str, args.guidance_interval)) if args.guidance_interval else "all"
        rows[f"cheaper: {args.steps or 'recommended'} steps, guided at t {lo_hi}, channels_last"] = (
            None, args.steps, None, args.guidance_interval, (True, "fp32"))
    return rows


def timed_pass(pipe: DefFillerPipeline, batches: list, opts: GenerationOptions) -> float:
    start = time.perf_counter()
    for masks, cats, prompts, seeds in batches:
        generate_batch(pipe, masks, cats, prompts, seeds, opts)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", help="checkpoint (default: a tiny random-weight model)")
    parser.add_argument("--mask_dir", help="masks to generate for (default: made with the tiny model)")
    parser.add_argument("--masks", type=positive_int, default=54, help="how many masks (default 54)")
    parser.add_argument("--batch_size", type=positive_int, default=27, help="masks per batch (default 27)")
    parser.add_argument("--repeats", type=positive_int, default=2, help="timed passes per setting (default 2)")
    parser.add_argument("--pairs", type=positive_int, default=810,
                        help="generated pairs to project the time for (default 810, the substitution study)")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="add a row: the recommendation with this many steps")
    parser.add_argument("--guidance_interval", type=int, nargs=2, default=None, metavar=("LO", "HI"),
                        help="add a row: the recommendation guided only at timesteps LO..HI")
    parser.add_argument("--student", help="add a row: this checkpoint (e.g. a distilled student of --ckpt) with its "
                        "own recommendation")
    add_threads(parser, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, mask_dir = args.ckpt, args.mask_dir
        if ckpt is None:
            ckpt = make_tiny_checkpoint(Path(tmp) / "tiny.safetensors")
        if mask_dir is None:
            mask_dir = Path(tmp) / "masks"
            write_masks(mask_dir, [f"{p}_{i}" for i in range(args.masks) for p in ("In", "Pa", "Sc")][: args.masks])
        models = load_models(ckpt, device="cpu")
        cats = categories_from_config(models.config.get("data", {}).get("categories"))
        jobs = build_jobs(Path(mask_dir), cats, 1, 0)[: args.masks]
        rec = recommended_sampling(models.config)
        pipes = {(cl, prec): DefFillerPipeline(load_models(ckpt, device="cpu"), dtype=DTYPES[prec], channels_last=cl)
                 for *_, (cl, prec) in settings(args).values()}
        size = next(iter(pipes.values())).image_size
        batches = [(torch.stack([mask_tensor(j.mask_path, size) for j in chunk]),
                    [j.category.index for j in chunk], [j.prompt for j in chunk], [j.seed for j in chunk])
                   for chunk in (jobs[i:i + args.batch_size] for i in range(0, len(jobs), args.batch_size))]
        runs = {}
        rows = {label: (*row, pipes[row[-1]], rec) for label, row in settings(args).items()}
        if args.student:
            student = DefFillerPipeline(load_models(args.student, device="cpu"))
            rows["student (--student): its recommendation, channels_last"] = (
                None, None, None, None, (True, "fp32"), student, recommended_sampling(student.models.config))
        for label, (sampler, steps, scale, interval, fmt, pipe, rec) in rows.items():
            opts = GenerationOptions(sampler=sampler or rec.get("sampler", "plms"), precision=fmt[1],
                                     steps=steps or rec.get("steps"),
                                     guidance_scale=scale if scale is not None else rec.get("guidance_scale", 3.0),
                                     guidance_interval=None if sampler else interval or rec.get("guidance_interval"),
                                     guidance_low=None if sampler else rec.get("guidance_low"))
            generate_batch(pipe, *batches[0], opts)  # warm-up
            runs[label] = (opts, pipe)
        best = {label: float("inf") for label in runs}
        for _ in range(args.repeats):
            for label, (opts, pipe) in runs.items():
                best[label] = min(best[label], timed_pass(pipe, batches, opts))
    n = len(jobs)
    first = n / best[next(iter(best))]
    print(f"{ckpt}: {n} masks, batch {args.batch_size}, {args.threads} thread(s), best of {args.repeats}")
    print(f"| setting | sampler, steps, guidance | img/s | vs first | minutes for {args.pairs} pairs |")
    print("|---|---|---|---|---|")
    for label, seconds in best.items():
        opts = runs[label][0]
        rate = n / seconds
        guided = f" at t {opts.guidance_interval[0]}-{opts.guidance_interval[1]}" if opts.guidance_interval else ""
        print(f"| {label} | {opts.sampler} {opts.steps}, g{opts.guidance_scale:g}{guided} | {rate:.2f} | "
              f"{rate / first:.2f}x | {args.pairs / rate / 60:.1f} |")


if __name__ == "__main__":
    run_cli(main)
