"""The IoU sample filter stage (expansion): the baseline detector of the filter's seed, trained on the real
training split alone, keeps the generated pairs it agrees with."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..context import Ctx
from .base import Stage


class FilterStage(Stage):
    """The baseline detector of ``filter.seed`` keeps the generated pairs whose masks it finds (IoU threshold)."""

    kind = "filter"

    def folder(self, ctx: Ctx) -> Path:
        return ctx.study_dir(self.study) / "filter"

    def inputs(self, ctx: Ctx) -> dict[str, Any]:
        return dict(ctx.study_config(self.study)["filter"])  # the detector: the baseline stage's digest

    def clear(self, ctx: Ctx) -> list[Path]:
        return [self.folder(ctx)]

    def run(self, ctx: Ctx) -> dict[str, Any]:
        from ...detector.predict import Detector
        from ...sample_filter import filter_samples

        f = ctx.study_config(self.study)["filter"]
        final = ctx.outputs(f"{self.study}.baseline")["detectors"][str(int(f["seed"]))]
        ctx.log(f"[{self.key}] detector: {final} (trained on the real training split by {self.study}.baseline)")
        det = Detector(final, ctx.cfg["device"])
        kept = self.folder(ctx) / "kept"
        summary = filter_samples(ctx.outputs(f"{self.study}.generation")["generated"], kept,
                                 lambda paths: det(paths, progress=ctx.progress), float(f["threshold"]),
                                 float(f["bin_threshold"]), ctx.categories, overwrite=True, log=ctx.log)
        return {"kept": str(kept), "n_kept": summary["kept"], "total": summary["total"],
                "per_category": summary["per_category"], "mean_iou": summary["mean_iou"],
                "detector": str(final), "paths": [str(kept / "filter.json")]}
