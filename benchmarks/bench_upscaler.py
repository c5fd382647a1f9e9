#!/usr/bin/env python
"""The output resize of a generated batch: bicubic against the mask-guided upscaler, in one run.

    python benchmarks/bench_upscaler.py --ckpt models/sd900_vpred.safetensors --threads 2

Times ``ldm.modules.mask_upscaler.upscale_images`` on random grey model-size images and random masks (the cost does
not depend on their content), ``--repeats`` passes each, interleaved, fastest pass counts. Reports images/s, the
ratio to bicubic and the seconds ``--pairs`` images add. Without ``--ckpt`` (or with one that embeds no upscaler)
an untrained upscaler of the default shape is timed (same cost).
"""
from __future__ import annotations

import argparse
import time

import torch

from ldm.checkpoint import load_models
from ldm.modules.mask_upscaler import MaskUpscaler, upscale_images
from runtime.cli import add_threads, positive_int
from runtime.errors import run_cli


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", help="release file whose upscaler to time (default: an untrained one, 64 -> 200 px)")
    p.add_argument("--images", type=positive_int, default=27, help="images per batch (default 27)")
    p.add_argument("--repeats", type=positive_int, default=3, help="timed passes (default 3)")
    p.add_argument("--pairs", type=positive_int, default=810, help="images of a study, for the added seconds")
    add_threads(p, 0)
    args = p.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    upscaler = load_models(args.ckpt).upscaler if args.ckpt else None
    upscaler = (upscaler or MaskUpscaler()).eval()
    torch.manual_seed(0)
    images = torch.rand(args.images, 1, upscaler.side, upscaler.side)  # grey, as the shipped generator draws
    masks = torch.rand(args.images, upscaler.size, upscaler.size) > 0.9
    bicubic = timed(lambda: upscale_images(images, upscaler.size), args.repeats)
    guided = timed(lambda: upscale_images(images, upscaler.size, masks, upscaler), args.repeats)
    print(f"{args.images} images {upscaler.side} -> {upscaler.size} px, {torch.get_num_threads()} threads")
    print("| resize | img/s | time vs bicubic | seconds for --pairs |")
    print("|---|---:|---:|---:|")
    for name, t in (("bicubic", bicubic), ("mask-guided upscaler", guided)):
        print(f"| {name} | {args.images / t:.1f} | {t / bicubic:.1f}x | {args.pairs * t / args.images:.1f} |")


if __name__ == "__main__":
    run_cli(main)
