#!/usr/bin/env python
"""Generation throughput: our infer path vs the original DefFiller way, measured in one run.

    python benchmarks/bench_infer.py --ckpt OUTPUT/demo/checkpoints/latest.safetensors --masks 8
    python benchmarks/bench_infer.py --ckpt model_sem/deffiller.bin --masks 2 --original_steps 50

The original ``infer.py`` reloads the checkpoint for every mask, samples one image at a time with
PLMS 50 and runs the conditional and unconditional branches as two forwards, each of which re-runs
the mask encoder and downsampler inside the UNet. We load once, batch the masks, batch both guidance
branches into one forward, compute the mask conditioning once per batch, and can use DPM-Solver++.

Each mode runs in its own subprocess (so peak memory is its own). Accuracy ("ODE error") is the RMS
distance of the final latents to a reference solution of the *same* ODE: same noise, masks, prompts,
guidance and start timestep. DDIM's and PLMS's uniform grids start at t=951 for 20 steps and 981 for
50; UniPC and DPM-Solver++ start at 981 (PLMS 50's start) whatever their step count; each run is
compared with the reference solve from its own start. The reference is third-order UniPC through every integer timestep
(``sample_reference``); with --dense_ddim the distance to dense DDIM (one first-order step per
timestep) is printed too, but dense DDIM's own error is of the size being measured and is shared with
DDIM and PLMS (same last step), so it flatters them. Without --ckpt a tiny
random-weight model is made (numbers then only show the pipeline overheads).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dataset.sem_dataset import one_hot_sem
from inference.jobs import build_jobs, job_noise, mask_tensor
from ldm.checkpoint import load_models
from ldm.diffusion.guidance import DEFAULT_GUIDANCE_SCALE, guided_eps_fn, original_eps_fn
from ldm.diffusion.samplers import SAMPLERS, sample_ddim_dense, sample_reference, start_timestep
from ldm.pipeline import DefFillerPipeline
from runtime.cli import add_guidance_scale, add_threads, positive_int
from tools.tiny_model import make_tiny_checkpoint, write_masks


def batch_inputs(pipe: DefFillerPipeline, jobs):
    masks = torch.stack([mask_tensor(j.mask_path, pipe.image_size) for j in jobs])
    sem = one_hot_sem(masks, torch.tensor([j.category.index for j in jobs]), pipe.in_dim)
    noise = torch.stack([job_noise(j, pipe.latent_shape(1)[1:]) for j in jobs])
    return sem, noise, [j.prompt for j in jobs]


def run_mode(args) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    models = load_models(args.ckpt, device="cpu")
    cats = __import__("dataset.categories", fromlist=["x"]).categories_from_config(
        models.config.get("data", {}).get("categories"))
    jobs = build_jobs(Path(args.mask_dir), cats, 1, 0)[: args.masks]
    start = time.perf_counter()
    latents = []
    if args.mode == "original":
        for job in jobs:
            models = load_models(args.ckpt, device="cpu")  # the original reloads per mask
            pipe = DefFillerPipeline(models)
            sem, noise, prompts = batch_inputs(pipe, [job])
            with torch.no_grad():
                ctx, uc = pipe.models.text_encoder.encode(prompts), pipe.models.text_encoder.encode([""])
                eps_fn = original_eps_fn(pipe.unet, sem, ctx, uc, args.guidance_scale)
                latents.append(SAMPLERS["plms"](eps_fn, noise, models.diffusion.alphas_cumprod, args.original_steps))
    else:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.precision]
        pipe = DefFillerPipeline(models, dtype=dtype)
        for lo in range(0, len(jobs), args.batch_size):
            sem, noise, prompts = batch_inputs(pipe, jobs[lo:lo + args.batch_size])
            cond, uncond = pipe.conditioning(sem, prompts)
            if args.mode in REFERENCES:
                eps_fn = guided_eps_fn(pipe.unet, cond, uncond, args.guidance_scale)
                latents.append(REFERENCES[args.mode](eps_fn, noise, models.diffusion.alphas_cumprod, args.start_t))
            else:
                latents.append(pipe.sample(cond, uncond, noise, args.sampler, args.steps, args.guidance_scale))
    elapsed = time.perf_counter() - start
    out = torch.cat(latents)
    save_file({"latents": out.contiguous()}, args.out)
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    return {"seconds": elapsed, "images": len(jobs), "peak_rss_gb": peak_rss_gb}


REFERENCES = {"dense": sample_ddim_dense, "reference": sample_reference}


def spawn(args, mode: str, out: Path, **over) -> dict:
    cmd = [sys.executable, __file__, "--mode", mode, "--ckpt", str(args.ckpt), "--mask_dir", str(args.mask_dir),
           "--masks", str(args.masks), "--out", str(out), "--guidance_scale", str(args.guidance_scale),
           "--threads", str(args.threads), "--batch_size", str(args.batch_size),
           "--original_steps", str(args.original_steps), "--precision", args.precision]
    for k, v in over.items():
        cmd += [f"--{k}", str(v)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", type=Path, default=None, help="checkpoint to measure")
    p.add_argument("--mask_dir", type=Path, default=None, help="folder of mask images (default: synthetic masks)")
    p.add_argument("--masks", type=positive_int, default=8, help="masks to generate for (default: 8)")
    p.add_argument("--batch_size", type=positive_int, default=8, help="masks per batch, our way (default: 8)")
    add_guidance_scale(p, DEFAULT_GUIDANCE_SCALE)
    p.add_argument("--original_steps", type=positive_int, default=50,
                   help="PLMS steps of the original way (default: 50)")
    add_threads(p, torch.get_num_threads())
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="autocast dtype of our runs (the original way and the references stay fp32)")
    p.add_argument("--fast", nargs="+", default=["unipc:10", "unipc:15", "unipc:20", "dpmsolver++:20",
                                                 "dpmsolver++:25", "ddim:20"],
                   metavar="SAMPLER:STEPS", help="our few-step runs to time (besides PLMS 50)")
    p.add_argument("--dense_ddim", action="store_true", help="also report the distance to a dense DDIM solve")
    p.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    p.add_argument("--sampler", default="plms", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=50, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--start_t", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench_infer_"))
    if args.ckpt is None:  # the test suite's tiny random-weight model
        args.ckpt = make_tiny_checkpoint(tmp / "tiny.safetensors")
    if args.mask_dir is None:
        names = [f"{c}_{i}" for i in range(1, 1 + (args.masks + 2) // 3) for c in ("In", "Pa", "Sc")]
        args.mask_dir = tmp / "masks"
        write_masks(args.mask_dir, names[: args.masks], size=200)
    ac = load_models(args.ckpt, parts=("diffusion",)).diffusion.alphas_cumprod
    runs = {
        f"original way (reload, batch 1, PLMS {args.original_steps}, 2 forwards)":
            ("original", dict(sampler="plms", steps=args.original_steps)),
        "ours PLMS 50": ("ours", dict(sampler="plms", steps=50)),
        **{f"ours {name} {steps}": ("ours", dict(sampler=name, steps=int(steps)))
           for name, steps in (f.split(":") for f in args.fast)},
    }
    starts = {label: start_timestep(over["sampler"], ac, over["steps"]) for label, (_, over) in runs.items()}
    results, refs = {}, {"reference": {}, **({"dense": {}} if args.dense_ddim else {})}
    for kind, by_start in refs.items():
        for t0 in sorted(set(starts.values())):
            out = tmp / f"{kind}_{t0}.safetensors"
            spawn(args, kind, out, **{"start_t": t0, "precision": "fp32"})
            by_start[t0] = load_file(out)["latents"]
            print(f"  done: {kind} solve from t={t0}", file=sys.stderr)
    for label, (mode, over) in runs.items():
        out = tmp / f"{len(results)}.safetensors"
        extra = {} if mode == "ours" else {"precision": "fp32"}
        results[label] = spawn(args, mode, out, **over, **extra)
        results[label]["latents"] = load_file(out)["latents"]
        print(f"  done: {label} ({results[label]['seconds']:.1f} s)", file=sys.stderr)
    base = next(v for k, v in results.items() if k.startswith("original"))
    print(f"checkpoint {args.ckpt}, {args.masks} masks, guidance {args.guidance_scale}, {args.threads} threads, "
          f"ours in {args.precision}")
    print(f"{'mode':58s} {'img/s':>8s} {'speed-up':>9s} {'start t':>8s} {'ODE error':>10s} "
          + (f"{'(vs dense DDIM)':>16s} " if args.dense_ddim else "") + f"{'peak RSS':>9s}")
    for label, r in results.items():
        err = {k: float((r["latents"] - v[starts[label]]).pow(2).mean().sqrt()) for k, v in refs.items()}
        ips = r["images"] / r["seconds"]
        print(f"{label:58s} {ips:8.3f} {ips / (base['images'] / base['seconds']):8.1f}x {starts[label]:8d} "
              f"{err['reference']:10.5f} " + (f"{err['dense']:16.5f} " if args.dense_ddim else "")
              + f"{r['peak_rss_gb']:7.2f} GB")


if __name__ == "__main__":
    main()
