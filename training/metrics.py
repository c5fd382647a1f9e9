"""Scalars for TensorBoard (``run/tb``) and ``run/metrics.jsonl``, and the gate statistic."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping

import torch

from ldm.modules.attention import GatedSelfAttention
from training.jsonl_log import JsonlLog


@torch.no_grad()
def gate_stats(unet: torch.nn.Module) -> dict[str, float]:
    """Mean |tanh(alpha)| of the gated self-attention layers: 0 means grounding is switched off.

    GLIGEN initialises every gate at 0; fine-tuning must open them (users report gates stuck near 0
    when only the wrong parameters train or the learning rate is too low).
    """
    attn, dense = [], []
    for m in unet.modules():
        if isinstance(m, GatedSelfAttention):
            attn.append(torch.tanh(m.alpha_attn.detach().float()).abs())
            dense.append(torch.tanh(m.alpha_dense.detach().float()).abs())
    if not attn:
        return {}
    return {"gates/attn_mean_abs_tanh": float(torch.stack(attn).mean()),
            "gates/dense_mean_abs_tanh": float(torch.stack(dense).mean()),
            "gates/attn_max_abs_tanh": float(torch.stack(attn).max())}


class MetricsLog:
    """TensorBoard scalars when ``tensorboard`` is installed, and always the run's JSON-lines log."""

    def __init__(self, run_dir: Path) -> None:
        self.jsonl = JsonlLog(run_dir)
        self.path = self.jsonl.path
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(Path(run_dir) / "tb"))
        except Exception as exc:  # tensorboard missing or broken: keep training, keep the JSON log
            warnings.warn(f"TensorBoard logging disabled ({type(exc).__name__}: {exc}); "
                          f"scalars still go to {self.path}")

    def truncate_after(self, iteration: int) -> None:
        """Drop JSON lines past ``iteration`` (written by a run that was killed before its next save)."""
        self.jsonl.truncate_after(iteration)

    def log(self, iteration: int, scalars: Mapping[str, float]) -> None:
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.add_scalar(key, value, iteration)
        self.jsonl.append(iteration, {k: float(v) for k, v in scalars.items()})

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
