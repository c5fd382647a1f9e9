"""Section 5: the guided noise prediction under fp16/bf16 autocast against fp32, same inputs."""
from __future__ import annotations

from typing import Any

import torch

from tools.gpucheck.common import Context, autocast, free_memory
from tools.gpucheck.masks import reference_inputs

FRACTIONS = (0.98, 0.5, 0.05)  # of the schedule's length: high, middle and low noise
# A sanity bound, not a quality target: half precision errors are a few percent at most; a broken
# cast path (overflow, wrong dtype mix) gives errors of order 1 or non-finite values.
MAX_RELATIVE_BOUND = 0.25


@torch.no_grad()
def section_eps(ctx: Context, log) -> dict[str, Any]:
    from ldm.checkpoint import load_models
    from ldm.diffusion.guidance import guided_eps_fn
    from ldm.pipeline import DefFillerPipeline

    pipe = DefFillerPipeline(load_models(ctx.checkpoint(), device=ctx.device), ctx.device)
    try:
        sem, noise, prompts = reference_inputs(ctx, pipe, max(2, ctx.plan.reference_masks))
        cond, uncond = pipe.conditioning(sem, prompts)  # fp32: the comparison isolates the UNet
        eps_fn = guided_eps_fn(pipe.unet, cond, uncond, ctx.plan.guidance)
        x = noise.to(ctx.device)
        rows = []
        steps = pipe.models.diffusion.num_timesteps
        for t in (int(f * steps) for f in FRACTIONS):
            tt = torch.full((x.shape[0],), t, device=ctx.device, dtype=torch.long)
            ref = eps_fn(x, tt).float()
            for precision in ctx.precisions[1:]:
                with autocast(ctx.device, precision):
                    low = eps_fn(x, tt).float()
                err = (low - ref).abs()
                row = {"t": t, "precision": precision, "finite": bool(torch.isfinite(low).all()),
                       "max_rel_err": float(err.max() / ref.abs().max().clamp_min(1e-12)),
                       "rms_rel_err": float(err.pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(1e-12)),
                       "eps_rms_fp32": float(ref.pow(2).mean().sqrt())}
                rows.append(row)
                log(f"  t={t:4d} {precision}: max rel err {row['max_rel_err']:.2e}, rms rel err {row['rms_rel_err']:.2e}")
    finally:
        del pipe
        free_memory()
    worst = {p: max(r["max_rel_err"] for r in rows if r["precision"] == p) for p in ctx.precisions[1:]}
    ok = all(r["finite"] for r in rows) and all(v < MAX_RELATIVE_BOUND for v in worst.values())
    return {"ok": ok, "rows": rows, "worst_max_rel_err": worst, "bound": MAX_RELATIVE_BOUND,
            "batch": int(x.shape[0]), "guidance": ctx.plan.guidance}
