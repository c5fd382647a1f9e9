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


def relative_errors(low: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(max |low - ref| / max |ref|, rms(low - ref) / rms(ref))."""
    err = (low - ref).abs()
    return (float(err.max() / ref.abs().max().clamp_min(1e-12)),
            float(err.pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(1e-12)))


@torch.no_grad()
def section_eps(ctx: Context, log) -> dict[str, Any]:
    """The network's eps (conditional branch) and the guided eps the samplers see, each under
    autocast vs fp32. Guidance amplifies the difference of the two branches (scale 3: up to 7x
    a branch's error), so the sanity bound applies to the network's own error."""
    from ldm.checkpoint import load_models
    from ldm.diffusion.guidance import guided_eps_fn
    from ldm.pipeline import DefFillerPipeline

    pipe = DefFillerPipeline(load_models(ctx.checkpoint(), device=ctx.device), ctx.device)
    try:
        sem, noise, prompts = reference_inputs(ctx, pipe, max(2, ctx.plan.reference_masks))
        cond, uncond = pipe.conditioning(sem, prompts)  # fp32: the comparison isolates the UNet
        fns = {"network": guided_eps_fn(pipe.unet, cond, None, 1.0),
               "guided": guided_eps_fn(pipe.unet, cond, uncond, ctx.plan.guidance)}
        x = noise.to(ctx.device)
        rows = []
        steps = pipe.models.diffusion.num_timesteps
        for t in (int(f * steps) for f in FRACTIONS):
            tt = torch.full((x.shape[0],), t, device=ctx.device, dtype=torch.long)
            refs = {k: fn(x, tt).float() for k, fn in fns.items()}
            for precision in ctx.precisions[1:]:
                row: dict[str, Any] = {"t": t, "precision": precision}
                for kind, fn in fns.items():
                    with autocast(ctx.device, precision):
                        low = fn(x, tt).float()
                    row[f"{kind}_finite"] = bool(torch.isfinite(low).all())
                    row[f"{kind}_max_rel_err"], row[f"{kind}_rms_rel_err"] = relative_errors(low, refs[kind])
                row["guided_eps_rms_fp32"] = float(refs["guided"].pow(2).mean().sqrt())
                rows.append(row)
                log(f"  t={t:4d} {precision}: max rel err network {row['network_max_rel_err']:.2e}, "
                    f"guided {row['guided_max_rel_err']:.2e} (rms {row['guided_rms_rel_err']:.2e})")
    finally:
        del pipe
        free_memory()
    worst = {f"{kind} {p}": max(r[f"{kind}_max_rel_err"] for r in rows if r["precision"] == p)
             for p in ctx.precisions[1:] for kind in fns}
    finite = all(r["network_finite"] and r["guided_finite"] for r in rows)
    ok = finite and all(v < MAX_RELATIVE_BOUND for k, v in worst.items() if k.startswith("network"))
    return {"ok": ok, "rows": rows, "worst_max_rel_err": worst, "bound_on_network_error": MAX_RELATIVE_BOUND,
            "batch": int(x.shape[0]), "guidance": ctx.plan.guidance}
