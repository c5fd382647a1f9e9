#!/usr/bin/env python
"""Which timestep grid suits the few-step solvers? ODE error per grid family, solver and step count.

    python benchmarks/bench_grids.py --ckpt OUTPUT/demo/checkpoints/latest.safetensors \
        --mask_dir OUTPUT/demo/procedural/Ground_truth --masks 8

No timing (every run here costs exactly ``steps`` evaluations, or 51 for PLMS 50): all solvers start
from the same noise at the same timestep (PLMS 50's first, 981), so one reference solve
(``sample_reference``) serves every row, and each error is printed as a ratio to PLMS 50's, the
paper's sampler. Grid families, all from ``--t_start`` down to 0:

  logsnr  even in log-SNR (what ``--sampler unipc`` / ``dpmsolver++`` use)
  time    even in t (DDIM's and PLMS's spacing)
  quad    even in sqrt(t) (DPM-Solver's "time_quadratic")
  karras  even in sigma^(1/7) (Karras et al. 2022, rho = 7)

With ``--precision bf16`` the few-step solves run the network under bf16 autocast (the solver stays
float32), with ``--bf16_timesteps LO HI`` only for evaluations at LO <= t <= HI; the reference and
PLMS 50 stay float32, as the original runs.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

from benchmarks.bench_infer import batch_inputs  # noqa: E402
from dataset.categories import categories_from_config  # noqa: E402
from inference.jobs import build_jobs  # noqa: E402
from ldm.checkpoint import load_models  # noqa: E402
from ldm.diffusion.guidance import DEFAULT_GUIDANCE_SCALE, guided_eps_fn  # noqa: E402
from ldm.diffusion.samplers import (  # noqa: E402
    _dpmpp_2m,
    _unipc,
    logsnr_timesteps,
    sample_plms,
    sample_reference,
    strictly_decreasing,
)
from ldm.pipeline import DefFillerPipeline  # noqa: E402
from runtime.cli import add_guidance_scale, add_threads, positive_int  # noqa: E402
from runtime.errors import run_cli  # noqa: E402


def grid_families(ac: torch.Tensor, t_start: int, steps: int, rho: float = 7.0) -> dict[str, list[int]]:
    """``steps + 1`` integer timesteps from ``t_start`` to 0 for each family (see the module doc)."""
    sigma = ((1 - ac.double()) / ac.double()).sqrt()
    s_hi, s_lo = float(sigma[t_start]) ** (1 / rho), float(sigma[0]) ** (1 / rho)
    karras = (s_hi + np.linspace(0, 1, steps + 1) * (s_lo - s_hi)) ** rho
    return {
        "logsnr": logsnr_timesteps(ac, t_start, steps),
        "time": strictly_decreasing(np.linspace(t_start, 0, steps + 1), t_start),
        "quad": strictly_decreasing(np.linspace(t_start ** 0.5, 0, steps + 1) ** 2, t_start),
        "karras": strictly_decreasing([int(torch.argmin((sigma - v).abs())) for v in karras], t_start),
    }


SOLVERS = {
    "UniPC-2": lambda eps_fn, x, ac, grid: _unipc(eps_fn, x, ac, grid, 2),
    "UniPC-3": lambda eps_fn, x, ac, grid: _unipc(eps_fn, x, ac, grid, 3),
    "DPM++2M": _dpmpp_2m,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", type=Path, required=True, help="checkpoint to measure")
    p.add_argument("--mask_dir", type=Path, required=True, help="folder of mask images")
    p.add_argument("--masks", type=positive_int, default=8, help="masks to solve for (default: 8)")
    add_guidance_scale(p, DEFAULT_GUIDANCE_SCALE)
    p.add_argument("--t_start", type=int, default=981,
                   help="start timestep of every solve (default: 981, PLMS 50's)")
    p.add_argument("--steps", type=positive_int, nargs="+", default=[15, 20, 25], help="step counts to try")
    add_threads(p, torch.get_num_threads())
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="of the few-step solves")
    p.add_argument("--bf16_timesteps", type=int, nargs=2, default=(0, 999), metavar=("LO", "HI"),
                   help="with --precision bf16: autocast only the evaluations at LO <= t <= HI")
    p.add_argument("--families", nargs="+", default=["logsnr", "time", "quad", "karras"],
                   help="grid families to compare (default: all four)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    models = load_models(args.ckpt, device="cpu")
    cats = categories_from_config(models.config.get("data", {}).get("categories"))
    pipe = DefFillerPipeline(models)
    sem, noise, prompts = batch_inputs(pipe, build_jobs(args.mask_dir, cats, 1, 0)[: args.masks])
    cond, uncond = pipe.conditioning(sem, prompts)
    eps_fn = guided_eps_fn(pipe.unet, cond, uncond, args.guidance_scale)
    fast_eps_fn = eps_fn
    if args.precision == "bf16":
        lo, hi = args.bf16_timesteps

        def fast_eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if not lo <= int(t[0]) <= hi:
                return eps_fn(x, t)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return eps_fn(x, t).float()
    ac = models.diffusion.alphas_cumprod
    ref = sample_reference(eps_fn, noise.clone(), ac, args.t_start, progress=True)

    def error(x: torch.Tensor) -> float:
        return float((x - ref).pow(2).mean().sqrt())

    if args.t_start != 981:
        print("note: PLMS 50 starts at 981, so its error below is for a different start")
    plms = error(sample_plms(eps_fn, noise.clone(), ac, 50))
    print(f"checkpoint {args.ckpt}, {len(prompts)} masks, guidance {args.guidance_scale}, start t={args.t_start}, "
          f"few-step solves in {args.precision}")
    print(f"PLMS 50: ODE error {plms:.5f}; below: error / PLMS 50's")
    families = args.families
    print(f"{'solver':10s} {'steps':>5s} " + " ".join(f"{f:>7s}" for f in families))
    for steps in args.steps:
        grids = grid_families(ac, args.t_start, steps)
        for name, solve in SOLVERS.items():
            ratios = [error(solve(fast_eps_fn, noise.clone(), ac, grids[f])) / plms for f in families]
            print(f"{name:10s} {steps:5d} " + " ".join(f"{r:7.2f}" for r in ratios), flush=True)


if __name__ == "__main__":
    run_cli(main)
