#!/usr/bin/env python
"""One full-size data point for the generation benchmark (DefFiller config, random weights).

    python benchmarks/bench_infer_fullsize.py --masks 2 4            # CPU, fp32 (+ --bf16)
    python benchmarks/bench_infer_fullsize.py --device cuda --masks 1 4 16 --bf16 --fp16

A full 50-step run of the original's way takes over 5 minutes per image on a CPU, so this script
measures the pieces each way pays — checkpoint load, one sampler evaluation the original's way
(batch 1, two forwards, mask encoder + downsampler inside each), one evaluation ours (all masks and
both guidance branches in one forward, conditioning precomputed) — in the same run, and projects
images/s for PLMS 50 (51 evaluations) and the few-step samplers in --fast, for each batch size in
--masks, in fp32 and, with --bf16 / --fp16, under autocast (bf16 is fast on CPUs with AVX-512 BF16
or AMX and on GPUs; fp16 only on GPUs). The original way always runs in fp32, as its code does. The
projection ignores the solvers' own arithmetic between evaluations (a few element-wise ops on the
latent). ODE accuracy needs trained weights and is measured by bench_infer.py on the demo model.
"""
from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

from ldm.build import build_models  # noqa: E402
from ldm.checkpoint import load_models, model_sections, save_checkpoint  # noqa: E402
from ldm.config import load_config  # noqa: E402
from ldm.diffusion.guidance import guided_eps_fn, original_eps_fn  # noqa: E402
from ldm.pipeline import DefFillerPipeline  # noqa: E402
from runtime.cli import add_config, add_device, positive_int  # noqa: E402
from runtime.device import pick_device  # noqa: E402
from runtime.errors import run_cli  # noqa: E402


def median_time(fn, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def peak_memory_gb(device: torch.device) -> str:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    if device.type == "cuda":
        return f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2 ** 30:.1f} GiB, peak RSS {rss:.1f} GB"
    return f"peak RSS {rss:.1f} GB"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config(p, str(REPO / "configs" / "sd_saliency_900.yaml"), help="full-size model config (random weights)")
    p.add_argument("--masks", type=positive_int, nargs="+", default=[2],
                   help="masks per batch for our way (one row each; default: 2)")
    p.add_argument("--repeats", type=positive_int, default=2, help="timed repeats per row (default: 2)")
    add_device(p)
    p.add_argument("--bf16", action="store_true", help="also time our evaluation under bf16 autocast")
    p.add_argument("--fp16", action="store_true", help="also time our evaluation under fp16 autocast (GPU)")
    p.add_argument("--fast", nargs="+", metavar="SAMPLER:STEPS",
                   default=["unipc:15", "unipc:20", "unipc:25", "dpmsolver++:20", "dpmsolver++:25"],
                   help="few-step samplers to project (one evaluation per step)")
    args = p.parse_args()
    device = pick_device(args.device)
    if args.fp16 and device.type != "cuda":
        raise SystemExit("--fp16 needs --device cuda (CPU fp16 matmuls are slow and not what users run)")
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="bench_full_"))
    cfg = load_config(args.config)
    models = build_models(cfg)
    ckpt = save_checkpoint(tmp / "full.safetensors", model_sections(models), cfg)
    del models
    t_load = median_time(lambda: load_models(ckpt, device=device), 1, device)
    pipe = DefFillerPipeline(load_models(ckpt, device=device), device=device)
    unet = pipe.unet
    precisions = {"fp32": None, **({"bf16": torch.bfloat16} if args.bf16 else {}),
                  **({"fp16": torch.float16} if args.fp16 else {})}

    def inputs(n: int):
        sem = torch.zeros(n, pipe.in_dim, 256, 256, device=device)
        sem[:, 0] = 1
        sem[:, 0, 100:140, 60:200], sem[:, 3, 100:140, 60:200] = 0, 1
        return sem, torch.randn(pipe.latent_shape(n), device=device), torch.full((n,), 500, device=device)

    def timed_eval(eps_fn, x, t, dtype) -> float:
        def call():
            ctx = contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
            with ctx:
                return eps_fn(x, t).float()
        call()  # warm-up (weight packing, cuDNN autotuning, first bf16 call) is not counted
        return median_time(call, args.repeats, device)

    with torch.no_grad():
        sem, x, t = inputs(1)
        ctx, uc = pipe.encode_text(["scratches"]), pipe.encode_text([""])
        t_orig = timed_eval(original_eps_fn(unet, sem, ctx, uc, 3.0), x, t, None)
        rows = []
        for n in args.masks:
            sem, x, t = inputs(n)
            t_cond = median_time(lambda: pipe.conditioning(sem, ["scratches"] * n), 1, device)
            ours = guided_eps_fn(unet, *pipe.conditioning(sem, ["scratches"] * n), 3.0)
            rows.append((n, t_cond, {k: timed_eval(ours, x, t, v) for k, v in precisions.items()}))
    orig_img_s = 1 / (t_load + 51 * t_orig)
    cpu = f"CPU, {torch.get_num_threads()} threads"
    where = f"{torch.cuda.get_device_name(device)}" if device.type == "cuda" else cpu
    print(f"config {Path(args.config).name}, random weights, {where}; {peak_memory_gb(device)}")
    print(f"checkpoint load {t_load:.1f} s | one evaluation the original way (batch 1, two forwards, fp32) "
          f"{t_orig:.3f} s/image | projected original way (reload + PLMS 50) {orig_img_s:.4f} img/s")
    samplers = [("PLMS 50", 51)] + [(f.replace(":", " "), int(f.split(":")[1])) for f in args.fast]
    print(f"{'masks':>5s} {'precision':9s} {'s/eval':>7s} {'per image':>9s} "
          + " ".join(f"{s:>16s}" for s, _ in samplers))
    for n, t_cond, t_ours in rows:
        for precision, t_eval in t_ours.items():
            speedups = [n / (t_cond + evals * t_eval) / orig_img_s for _, evals in samplers]
            print(f"{n:5d} {precision:9s} {t_eval:7.3f} {t_eval / n:9.3f} " + " ".join(f"{v:15.1f}x" for v in speedups))


if __name__ == "__main__":
    run_cli(main)
