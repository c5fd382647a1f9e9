"""Guidance distillation (Meng et al. 2023, first stage): a student learns its teacher's guided output, so
that it draws with one network forward per step what the teacher draws with two.

The guidance distilled is the teacher checkpoint's recommendation (its config's ``sampling:`` section:
``guidance_scale``, ``guidance_interval``, ``guidance_low``; to distill another, re-export the teacher with
``python -m inference.export --sampling ...``). The student starts from the teacher's weights (its EMA when
it has them), sees every sample with its full conditioning, and recommends the teacher's sampler and steps
with no guidance (scale 1).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from ldm.build import DefFillerModels
from ldm.checkpoint import (
    Checkpoint,
    apply_weights_choice,
    check_diffusion,
    load_into,
    models_from_checkpoint,
    read_checkpoint,
)
from ldm.diffusion.guidance import DEFAULT_GUIDANCE_SCALE, check_interval, check_low, combine_per_sample
from ldm.pipeline import DefFillerPipeline
from runtime.digest import file_sha256
from runtime.errors import UserError


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance settings: the weight, the timesteps it applies at and the low-frequency weight."""

    scale: float = DEFAULT_GUIDANCE_SCALE
    interval: Optional[tuple[int, int]] = None
    low: Optional[tuple[float, int]] = None

    def describe(self) -> str:
        interval = f", t {self.interval[0]}-{self.interval[1]}" if self.interval else ""
        low = f", low frequencies (box {self.low[1]}) {self.low[0]:g}" if self.low else ""
        return f"guidance {self.scale:g}{interval}{low}"


def recommended_guidance(cfg: Optional[DictConfig], where: str) -> Guidance:
    """The guidance a config's ``sampling:`` section recommends (the paper's 3 everywhere when it has none)."""
    section = (cfg or {}).get("sampling") or {}
    try:
        scale = float(section.get("guidance_scale", DEFAULT_GUIDANCE_SCALE))
        if not math.isfinite(scale):
            raise UserError(f"guidance_scale must be a finite number, got {scale}")
        interval = section.get("guidance_interval")
        low = section.get("guidance_low")
        return Guidance(scale, check_interval(list(interval)) if interval is not None else None,
                        check_low(list(low)) if low is not None else None)
    except (UserError, TypeError, ValueError) as exc:
        raise UserError(f"{where}: its config's sampling: section: {exc}; re-export it with python -m "
                        "inference.export --sampling ...") from None


def student_sampling(teacher_cfg: Optional[DictConfig]) -> dict[str, Any]:
    """The student's ``sampling:`` section: the teacher's sampler and steps, no guidance."""
    section = (teacher_cfg or {}).get("sampling") or {}
    kept = {k: section[k] for k in ("sampler", "steps") if section.get(k) is not None}
    return {**kept, "guidance_scale": 1.0}


class Teacher:
    """A frozen trained model whose guided output is the student's target."""

    def __init__(self, path: str | Path, run_cfg: DictConfig, device: torch.device,
                 dtype: torch.dtype = torch.float32) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"train.distill_from {path}: file not found; pass a checkpoint written by main.py "
                            "or python -m inference.export")
        self.sha256 = file_sha256(self.path)
        self.checkpoint: Checkpoint = read_checkpoint(self.path)
        used = apply_weights_choice(self.checkpoint, "auto")
        # a release file holds its EMA weights as its only weights and says so in its metadata
        self.weights = self.checkpoint.metadata.get("weights", used) if used == "raw" else used
        check_diffusion(run_cfg, self.checkpoint)  # the student learns the teacher's process, not another
        self.config = self.checkpoint.config if self.checkpoint.config is not None else run_cfg
        self.guidance = recommended_guidance(self.config, str(self.path))
        models: DefFillerModels = models_from_checkpoint(self.checkpoint, self.config, device=device)
        for p in (q for part in models.parts().values() for q in part.parameters()):
            p.requires_grad_(False)
        self.pipeline = DefFillerPipeline(models, device, dtype)
        self.dtype = dtype

    def initialise(self, student: DefFillerModels) -> str:
        """Load the teacher's weights strictly into ``student``; returns a description for the log."""
        sections = {k: v for k, v in self.checkpoint.sections.items() if k != "diffusion"}
        load_into(student, dataclasses.replace(self.checkpoint, sections=sections))
        return f"{self.path} (the teacher's {self.weights} weights)"

    def provenance(self) -> dict[str, str]:
        """What a student's checkpoints record of their teacher."""
        return {"distill_from": str(self.path.resolve()), "teacher_sha256": self.sha256,
                "teacher_guidance": self.guidance.describe()}

    def student_config(self, cfg: DictConfig) -> DictConfig:
        """``cfg`` with the student's ``sampling:`` section."""
        out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        out.sampling = student_sampling(self.config)
        return out

    @torch.no_grad()
    def target(self, x_noisy: torch.Tensor, t: torch.Tensor, sem: torch.Tensor, captions: list[str]) -> torch.Tensor:
        """The teacher's guided output at ``(x_noisy, t)`` for one-hot maps ``sem`` and ``captions``, with the
        conditioning inference gives it (:meth:`DefFillerPipeline.conditioning`), in float32."""
        pipe, g = self.pipeline, self.guidance
        cond, uncond = pipe.conditioning(sem, captions)
        both = cond.cat(uncond)
        with torch.autocast(x_noisy.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            out = pipe.unet(torch.cat([x_noisy, x_noisy]), torch.cat([t, t]), both.context,
                            both.grounding_tokens, both.extra).float()
        out_c, out_u = out.chunk(2)
        return combine_per_sample(out_u, out_c, t, g.scale, g.interval, g.low)


def check_teacher_unchanged(saved_meta: Mapping[str, str], teacher: Optional[Teacher], where: str,
                            allow: bool) -> None:
    """A resumed student keeps its teacher: the same file content, or none if it had none."""
    before = saved_meta.get("teacher_sha256", "")
    now = teacher.sha256 if teacher is not None else ""
    if before != now and not allow:
        said = f"sha256 {before[:12]}" if before else "no teacher"
        has = f"sha256 {now[:12]}" if now else "none"
        raise UserError(f"{where}: this run was trained with {said} as train.distill_from, now {has}; restore it, "
                        "or start a new run (another --name)")
