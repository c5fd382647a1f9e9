#!/usr/bin/env python
"""One full-size data point for the generation benchmark (DefFiller config, random weights, CPU).

    python benchmarks/bench_infer_fullsize.py --masks 2

A full 50-step run of the original's way takes tens of minutes per image on a CPU, so this script
measures the pieces each way pays — checkpoint load, one sampler evaluation the original's way
(batch 1, two forwards, mask encoder + downsampler inside each), one evaluation ours (all masks and
both guidance branches in one forward, conditioning precomputed) — in the same run, and projects
images/s for PLMS 50 (51 evaluations) and the few-step samplers in --fast, in fp32 and,
with --bf16, under bf16 autocast (fast on CPUs with AVX-512 BF16 or AMX, and on GPUs). The projection
is stated as such; ODE accuracy needs trained weights and is measured by bench_infer.py on the demo
model (same start timestep, third-order dense reference solve).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_infer import original_eps_fn  # noqa: E402
from ldm.build import build_models  # noqa: E402
from ldm.checkpoint import load_models, model_sections, save_checkpoint  # noqa: E402
from ldm.config import load_config  # noqa: E402
from ldm.pipeline import DefFillerPipeline  # noqa: E402


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "configs" / "sd_saliency_900.yaml"))
    p.add_argument("--masks", type=int, default=2, help="masks per batch for our way")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--bf16", action="store_true", help="also time our evaluation under bf16 autocast")
    p.add_argument("--fast", nargs="+", metavar="SAMPLER:STEPS",
                   default=["unipc:10", "unipc:15", "unipc:20", "dpmsolver++:20", "dpmsolver++:25"],
                   help="few-step samplers to project (one evaluation per step)")
    args = p.parse_args()
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="bench_full_"))
    cfg = load_config(args.config)
    models = build_models(cfg)
    ckpt = save_checkpoint(tmp / "full.safetensors", model_sections(models), cfg)
    del models
    t_load = median_time(lambda: load_models(ckpt), 1)
    models = load_models(ckpt)
    pipe = DefFillerPipeline(models)
    unet, n = pipe.unet, args.masks
    sem = torch.zeros(n, pipe.in_dim, 256, 256)
    sem[:, 0] = 1
    sem[:, 0, 100:140, 60:200], sem[:, 3, 100:140, 60:200] = 0, 1
    x = torch.randn(pipe.latent_shape(n))
    t = torch.full((n,), 500)
    with torch.no_grad():
        ctx = pipe.encode_text(["scratches"] * n)
        uc = pipe.encode_text([""] * n)
        orig = original_eps_fn(unet, sem[:1], ctx[:1], uc[:1], 3.0)
        t_orig = median_time(lambda: orig(x[:1], t[:1]), args.repeats)
        t_cond = median_time(lambda: pipe.conditioning(sem, ["scratches"] * n), 1)
        cond, uncond = pipe.conditioning(sem, ["scratches"] * n)
        from ldm.diffusion.guidance import guided_eps_fn
        ours = guided_eps_fn(unet, cond, uncond, 3.0)
        t_ours = {"fp32": median_time(lambda: ours(x, t), args.repeats)}
        if args.bf16:
            def ours_bf16():
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return ours(x, t).float()
            ours_bf16()  # first bf16 call packs weights; not counted
            t_ours["bf16"] = median_time(ours_bf16, args.repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    orig_img_s = 1 / (t_load + 51 * t_orig)
    print(f"full DefFiller config, random weights, {torch.get_num_threads()} threads, CPU")
    print(f"checkpoint load {t_load:.1f} s | one evaluation: original way {t_orig:.2f} s/image, ours "
          + ", ".join(f"{v:.2f} s ({k})" for k, v in t_ours.items())
          + f" per batch of {n} | conditioning once per batch {t_cond:.2f} s | peak RSS {peak:.1f} GB")
    print(f"projected: original way (reload + PLMS 50, batch 1, fp32) {orig_img_s:.4f} img/s")
    for precision, t_eval in t_ours.items():
        for label, evals in [("PLMS 50", 51)] + [(f.replace(":", " "), int(f.split(":")[1])) for f in args.fast]:
            ips = n / (t_cond + evals * t_eval)
            print(f"projected: ours {label:16s} {precision}: {ips:.4f} img/s = {ips / orig_img_s:.1f}x")


if __name__ == "__main__":
    main()
