"""The baseline stage: the detectors trained on the study's real training pairs alone, one per seed.

They need nothing but the split, so they train as soon as it exists: with ``jobs`` > 1, beside the generator
and the mask producer. The detectors stage tests them with the other settings (it reuses the finished runs),
and the expansion study's IoU filter keeps the generated pairs that its seed's run agrees with."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime.digest import yaml_values_sha256_or_none

from ..context import Ctx
from .base import Stage
from .detectors import REAL, DetectorsStage, check_real_training, protocol_config


class BaselineStage(Stage):
    """One detector per seed trained on the real training split (the ``real`` setting of the detectors stage)."""

    kind = "baseline"
    training = True

    def folder(self, ctx: Ctx) -> Path:
        return DetectorsStage(self.study, []).folder(ctx)  # the runs are the detectors stage's own

    def seeds(self, ctx: Ctx) -> list[int]:
        """The detector seeds, and the IoU filter's seed in the expansion study."""
        seeds = [int(s) for s in ctx.study_config(self.study)["detectors"]["seeds"]]
        if self.study == "expansion":
            filter_seed = int(ctx.study_config(self.study)["filter"]["seed"])
            seeds += [filter_seed] if filter_seed not in seeds else []
        return seeds

    def inputs(self, ctx: Ctx) -> dict[str, Any]:
        d = ctx.study_config(self.study)["detectors"]
        return {"config": d["config"], "overrides": d["overrides"], "seeds": self.seeds(ctx),
                "config_values_sha256": yaml_values_sha256_or_none(d["config"]), "device": ctx.device_overrides()}

    def run(self, ctx: Ctx) -> dict[str, Any]:
        from ...detector.runs import detector_file
        from ...protocols import train_protocol

        check_real_training(ctx, self.study, self.key)
        cfg = protocol_config(ctx, self.study, [dict(REAL)], self.seeds(ctx), self.folder(ctx))
        runs = train_protocol(cfg, force=self.key in ctx.forced, progress=ctx.progress, log=ctx.log)
        detectors = {str(seed): str(detector_file(run["dir"])) for seed, run in zip(self.seeds(ctx), runs)}
        return {"detectors": detectors, "paths": list(detectors.values())}
