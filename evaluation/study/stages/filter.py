"""The IoU sample filter stage (expansion): a detector trained on the real training split keeps the
generated pairs it agrees with."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime.digest import yaml_values_sha256_or_none

from .. import leakage
from ..context import Ctx
from .base import Stage


def detector_cfg(ctx: Ctx, study: str, seed: int):
    from ...protocols import detector_config

    d = ctx.study_config(study)["detectors"]
    from omegaconf import OmegaConf

    overrides = [*d["overrides"], *ctx.device_overrides(side_by_side=False), f"train.seed={int(seed)}"]
    det = OmegaConf.create({"name": f"seed{seed}", "config": d["config"], "overrides": overrides})
    return detector_config(det, [])


class FilterStage(Stage):
    """A detector trained on the study's real training split keeps the generated pairs it agrees with."""

    kind = "filter"

    def folder(self, ctx: Ctx) -> Path:
        return ctx.study_dir(self.study) / "filter"

    def inputs(self, ctx: Ctx) -> dict[str, Any]:
        from runtime.configs import to_plain

        f = ctx.study_config(self.study)["filter"]
        d = ctx.study_config(self.study)["detectors"]
        return {**f, "detector": to_plain(detector_cfg(ctx, self.study, f["seed"])),
                "detector_config_values_sha256": yaml_values_sha256_or_none(d["config"])}

    def clear(self, ctx: Ctx) -> list[Path]:
        return [self.folder(ctx)]

    def run(self, ctx: Ctx) -> dict[str, Any]:
        from ...detector.predict import Detector
        from ...detector.train import train_detector
        from ...sample_filter import filter_samples

        f = ctx.study_config(self.study)["filter"]
        train_pairs, _ = ctx.pairs(self.study)
        leakage.check_stems(self.key, [p.stem for p in train_pairs], ctx.test_stems(self.study), "its training pairs")
        leakage.refuse_test_content(self.key, leakage.pair_files(train_pairs), ctx.test_digests(self.study),
                                    "keep copies of test items out of the training split")
        det_dir = self.folder(ctx) / "detector"
        final = train_detector(detector_cfg(ctx, self.study, f["seed"]), train_pairs, det_dir, resume=True,
                               log=ctx.log, progress=ctx.progress)
        det = Detector(final, ctx.cfg["device"])
        kept = self.folder(ctx) / "kept"
        summary = filter_samples(ctx.outputs(f"{self.study}.generation")["generated"], kept,
                                 lambda paths: det(paths, progress=ctx.progress), float(f["threshold"]),
                                 float(f["bin_threshold"]), ctx.categories, overwrite=True, log=ctx.log)
        return {"kept": str(kept), "n_kept": summary["kept"], "total": summary["total"],
                "per_category": summary["per_category"], "mean_iou": summary["mean_iou"],
                "detector": str(final), "paths": [str(kept / "filter.json")]}
