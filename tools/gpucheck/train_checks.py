"""Sections 1 and 2: training steps of the full config through the project's ``Trainer.train()``
(speed, memory, finite loss and gradients, the trainable set), and save -> load -> resume."""
from __future__ import annotations

import math
import shutil
import time
from typing import Any

import torch

from tools.gpucheck.common import (
    Context,
    free_memory,
    one_line,
    peak_gib,
    random_weight_trainer,
    reset_peak,
    sync,
    train_argv,
)


def make_trainer(ctx: Context, trainer_module: Any, name: str, info: Any = None, **over: Any) -> Any:
    """A ``Trainer`` built as ``main.py`` builds it (``info``: the rank record; default a world of one)."""
    from runtime import distributed as D
    from training.options import parse_args, resolve_options

    cfg = ctx.config()
    opts = resolve_options(parse_args(train_argv(ctx, ctx.work / "runs", name, **over)), cfg)
    if ctx.tiny:
        torch.set_num_threads(1)
    return trainer_module.Trainer(opts, cfg, info or D.DistInfo(device=ctx.device))


class StepProbe:
    """Wraps a trainer's ``compute_loss`` and ``_optimizer_step`` (the loop itself is ``train()``):
    records each loss, gradient norm, fp16 loss scale and the time each step ends."""

    def __init__(self, tr: Any, device: torch.device) -> None:
        self.losses: list[float] = []
        self.grad_norms: list[float] = []
        self.scales: list[float] = []
        self.marks: list[float] = []
        loss_fn, step_fn = tr.compute_loss, tr._optimizer_step

        def compute_loss(batch, gen):
            loss = loss_fn(batch, gen)
            self.losses.append(float(loss.detach()))
            return loss

        def optimizer_step():
            norm = step_fn()
            sync(device)
            self.marks.append(time.perf_counter())
            self.grad_norms.append(norm)
            if tr.scaler is not None:
                self.scales.append(float(tr.scaler.get_scale()))
            return norm

        tr.compute_loss, tr._optimizer_step = compute_loss, optimizer_step


def no_checkpoint_writes(tr: Any) -> None:
    """Time steps, not checkpoint files: the save's collectives still run, nothing is written."""
    tr.checkpoints.save = lambda *a, **k: None


@torch.no_grad()
def fingerprints(params: list[tuple[str, torch.nn.Parameter]]) -> torch.Tensor:
    """One float64 sum and abs-sum per parameter (a cheap "did it change" check)."""
    if not params:
        return torch.zeros(0, 2, dtype=torch.float64)
    rows = [torch.stack([p.detach().double().sum(), p.detach().double().abs().sum()]) for _, p in params]
    return torch.stack(rows).cpu()


def requires_grad_names(tr: Any) -> set[str]:
    return {f"{part}.{n}" for part, m in tr.models.parts().items() for n, p in m.named_parameters() if p.requires_grad}


def train_one(ctx: Context, trainer_module: Any, precision: str, checkpointing: bool) -> dict[str, Any]:
    """``warmup + iters`` steps of one setting; figures and checks."""
    plan = ctx.plan
    name = f"train_{precision}_{'ckpt' if checkpointing else 'nockpt'}"
    tr = make_trainer(ctx, trainer_module, name, precision=precision,
                      gradient_checkpointing=str(checkpointing).lower(), total_iters=plan.warmup + plan.iters)
    try:
        no_checkpoint_writes(tr)
        expected = {f"model.{n}" for n in trainer_module.trainable_names(tr.unet, "grounding")}
        set_before = requires_grad_names(tr)
        trained = [(n, p) for n, p in tr.unet.named_parameters() if p.requires_grad]
        frozen = [(f"{part}.{n}", p) for part, m in tr.models.parts().items() for n, p in m.named_parameters()
                  if not p.requires_grad]
        fp_trained, fp_frozen = fingerprints(trained), fingerprints(frozen)
        probe = StepProbe(tr, ctx.device)
        reset_peak(ctx.device)
        sync(ctx.device)
        start = time.perf_counter()
        tr.train()
        peak = peak_gib(ctx.device)
        marks = [start] + probe.marks
        step_s = [b - a for a, b in zip(marks, marks[1:])][plan.warmup:]
        applied = [math.isfinite(n) for n in probe.grad_norms]
        moved = (fingerprints(trained) != fp_trained).any(dim=1).tolist()
        unmoved = [n for (n, _), m in zip(trained, moved) if not m]
        frozen_unchanged = bool(torch.equal(fingerprints(frozen), fp_frozen))
        row = {
            "precision": precision, "gradient_checkpointing": checkpointing, "batch_size": tr.opts.batch_size,
            "image_size": int(ctx.config().data.image_size), "iters_timed": len(step_s),
            "s_per_it": round(sorted(step_s)[len(step_s) // 2], 4) if step_s else None,
            "peak_gib": peak, "losses": [round(v, 5) for v in probe.losses],
            "grad_norms": [round(v, 4) if math.isfinite(v) else str(v) for v in probe.grad_norms],
            "loss_scales": probe.scales, "steps_applied": sum(applied), "steps": len(applied),
            "loss_finite": all(math.isfinite(v) for v in probe.losses),
            "trainable_params": sum(p.numel() for _, p in trained),
            "trainable_set_ok": set_before == expected and requires_grad_names(tr) == expected,
            "trained_tensors_moved": f"{sum(moved)}/{len(moved)}", "unmoved": unmoved[:5],
            "frozen_params_unchanged": frozen_unchanged,
        }
        # fp16: the scaler may skip a step whose scaled gradients overflowed (then lowers the scale);
        # fp32/bf16 must never produce a non-finite gradient norm (train() would have raised).
        grads_ok = row["steps_applied"] >= 1 if precision == "fp16" else all(applied)
        # a tensor may legitimately stay put (the null grounding token when no sample drew it)
        row["ok"] = bool(row["loss_finite"] and grads_ok and row["trainable_set_ok"]
                         and sum(moved) >= 0.9 * len(moved) and frozen_unchanged)
        return row
    finally:
        del tr
        free_memory()


def section_train(ctx: Context, log) -> dict[str, Any]:
    """Section 1: every precision, with and without gradient checkpointing."""
    rows = []
    with random_weight_trainer(ctx.device) as trainer_module:
        for precision in ctx.precisions:
            for checkpointing in (True, False):
                try:  # one setting's crash (e.g. an fp16 kernel) must not hide the others' figures
                    row = train_one(ctx, trainer_module, precision, checkpointing)
                except (Exception, SystemExit) as exc:
                    row = {"precision": precision, "gradient_checkpointing": checkpointing, "ok": False,
                           "error": one_line(exc)}
                    free_memory()
                error = f" ({row['error']})" if "error" in row else ""
                log(f"  {precision:4s} checkpointing={str(checkpointing):5s} {row.get('s_per_it')} s/it, "
                    f"peak {row.get('peak_gib')} GiB, ok={row['ok']}{error}")
                rows.append(row)
    bad = [f"{r['precision']}/{'ckpt' if r['gradient_checkpointing'] else 'no-ckpt'}" for r in rows if not r["ok"]]
    return {"ok": not bad, "rows": rows, "failed": bad}


def trained_state(tr: Any) -> dict[str, torch.Tensor]:
    out = {n: p.detach().float().cpu().clone() for n, p in tr.named_params}
    if tr.ema is not None:
        out.update({f"ema.{k}": v.detach().float().cpu().clone() for k, v in tr.ema.state_dict().items()})
    return out


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def section_resume(ctx: Context, log) -> dict[str, Any]:
    """Section 2: N iterations in one go vs N-1, a checkpoint on disk, then a new Trainer resuming."""
    precision = "fp16" if ctx.cuda else "bf16"
    split, total = 2, 3
    deterministic = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True  # fewer run-to-run differences to tell from resume errors
    try:
        return _resume(ctx, log, precision, split, total)
    finally:
        torch.backends.cudnn.deterministic = deterministic


def _resume(ctx: Context, log, precision: str, split: int, total: int) -> dict[str, Any]:
    common = dict(precision=precision, enable_ema="true", ema_rate=0.5)
    with random_weight_trainer(ctx.device) as trainer_module:
        full = make_trainer(ctx, trainer_module, "resume_full", total_iters=total, **common)
        no_checkpoint_writes(full)
        probe_full = StepProbe(full, ctx.device)
        full.train()
        end_full = trained_state(full)
        del full
        free_memory()

        first = make_trainer(ctx, trainer_module, "resume_split", total_iters=split, save_every_iters=split, **common)
        first.train()  # writes the checkpoint at `split` (weights + optimiser/scaler/EMA/RNG state)
        at_split = trained_state(first)
        saved = first.last_saved
        del first
        free_memory()
        log(f"  saved {saved.weights.name} + {saved.state.name}; resuming")

        resumed = make_trainer(ctx, trainer_module, "resume_split", total_iters=total, **common)
        resumed_at = resumed.iteration
        no_checkpoint_writes(resumed)
        probe_res = StepProbe(resumed, ctx.device)
        resumed.train()
        end_resumed = trained_state(resumed)
        del resumed
        free_memory()
    shutil.rmtree(ctx.work / "runs" / "resume_split", ignore_errors=True)
    diff = max_abs_diff(end_full, end_resumed)
    update = max_abs_diff(end_full, at_split)  # size of the last step (scale for the difference)
    loss_full, loss_res = probe_full.losses[split:], probe_res.losses
    result = {
        "precision": precision, "ema": True, "uninterrupted_iters": total, "saved_at": split,
        "resumed_at": resumed_at, "loss_uninterrupted": loss_full, "loss_resumed": loss_res,
        "max_abs_diff_weights": diff, "last_step_max_update": update,
        "bitwise_equal": diff == 0.0 and loss_full == loss_res,
        "relative_diff": diff / update if update > 0 else (0.0 if diff == 0 else math.inf),
    }
    # CUDA kernels (atomic adds in some backward passes) need not be bitwise reproducible; the resumed
    # step must still match the uninterrupted one far below the size of a step.
    result["ok"] = bool(resumed_at == split and len(loss_res) == total - split
                        and (result["bitwise_equal"] or (ctx.cuda and result["relative_diff"] < 1e-2)))
    return result
