"""The detectors stage: every setting of the study x every seed (the runs on real pairs alone come trained from
the baseline stage), and what it shares with that stage: the protocol config and the real split's checks."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from dataset.pairs import find_pairs
from runtime.digest import yaml_values_sha256_or_none

from .. import leakage
from ..context import Ctx
from .base import Stage
from .generation import check_producers, generation_runs, seeded_setting


def detector_overrides(ctx: Ctx, study: str, seed: int) -> list[str]:
    """The overrides of the study's detector of ``seed``: its own, the device and threads, the seed."""
    d = ctx.study_config(study)["detectors"]
    return [*d["overrides"], *ctx.device_overrides(), f"train.seed={int(seed)}"]


def detector_cfg(ctx: Ctx, study: str, seed: int):
    """The full detector config of ``seed`` (configs/eval/detector.yaml + the study's overrides)."""
    from omegaconf import OmegaConf

    from ...protocols import detector_config

    d = ctx.study_config(study)["detectors"]
    det = OmegaConf.create({"name": f"seed{seed}", "config": d["config"],
                            "overrides": detector_overrides(ctx, study, seed)})
    return detector_config(det, [])


def protocol_config(ctx: Ctx, study: str, settings: list[dict], seeds: list[int], folder: Path):
    """The :mod:`evaluation.protocols` config of ``settings`` x one detector per seed, runs under ``folder``."""
    from omegaconf import OmegaConf

    study_cfg = ctx.study_config(study)
    _, split_path = ctx.split(study)
    d = study_cfg["detectors"]
    detectors = [{"name": f"seed{s}", "config": d["config"], "overrides": detector_overrides(ctx, study, s)}
                 for s in seeds]
    return OmegaConf.create({"protocol": study, "data_root": ctx.data_root, "ratio": study_cfg["ratio"],
                             "seed": study_cfg["seed"], "split": str(split_path), "out": str(folder),
                             "categories": ctx.cfg.get("categories"), "detectors": detectors,
                             "detector_overrides": [], "settings": settings,
                             "jobs": int(ctx.cfg.get("jobs") or 1)})


def check_real_training(ctx: Ctx, study: str, where: str) -> None:
    """Refuse a training split that names a test sample or holds a copy of a test item's pixels."""
    split, split_path = ctx.split(study)
    leakage.check_stems(where, split["train"], set(split["test"]), f"the split {split_path}")
    by_stem = ctx.pairs_by_stem()
    leakage.refuse_test_content(where, leakage.pair_files(by_stem[s] for s in split["train"]),
                                ctx.test_digests(study), f"it is a training pair of {split_path}; keep copies of "
                                "test items out of the training split")


REAL = {"name": "real", "real": True}  # the setting of real pairs alone (the protocols' baseline)


class DetectorsStage(Stage):
    """Every setting of the study x every seed (evaluation.protocols.run_protocol; finished runs are reused)."""

    kind = "detectors"

    def folder(self, ctx: Ctx) -> Path:
        return ctx.study_dir(self.study) / "detectors"

    def inputs(self, ctx: Ctx) -> dict[str, Any]:
        d = ctx.study_config(self.study)["detectors"]
        return {**d, "config_values_sha256": yaml_values_sha256_or_none(d["config"]), "device": ctx.device_overrides()}

    def settings(self, ctx: Ctx) -> tuple[list[dict], dict[str, str]]:
        """Protocol settings and the settings left out (with why)."""
        runs = generation_runs(ctx, self.study)
        seeds = [r["seed"] for r in runs]
        name, real = ("generated", False) if self.study == "substitution" else ("real+generated", True)
        settings = [dict(REAL)]
        settings += [{"name": seeded_setting(name, r["seed"], seeds), "real": real,
                      "generated": [{"dir": r["dir"], "n": None}]} for r in runs]
        if self.study == "substitution":
            return settings, {}
        filt = ctx.outputs(f"{self.study}.filter")  # the IoU filter of the first generation seed's pairs
        skipped = {}
        if filt["n_kept"] > 0:
            settings.append({"name": "real+filtered", "real": True, "generated": [{"dir": filt["kept"], "n": None}]})
        else:
            threshold = ctx.study_config(self.study)["filter"]["threshold"]
            skipped["real+filtered"] = f"no generated pair reached IoU >= {threshold}"
        share = ctx.study_config(self.study)["detectors"].get("real_share")
        if share is not None:  # the same settings with real pairs at a fixed share of every batch
            settings += [{**s, "name": f"{s['name']} fair", "real_share": float(share)} for s in settings
                         if s.get("generated")]
            skipped.update({f"{name} fair": why for name, why in skipped.items()})
        return settings, skipped

    def run(self, ctx: Ctx) -> dict[str, Any]:
        from runtime.configs import to_plain

        from ...protocols import run_protocol

        split, _ = ctx.split(self.study)
        test_stems, tests = set(split["test"]), ctx.test_digests(self.study)
        check_producers(ctx, self.study, self.key)
        settings, skipped = self.settings(ctx)
        for setting in settings:
            where = f"{self.key} (setting {setting['name']})"
            if setting.get("real"):
                check_real_training(ctx, self.study, where)
            for g in setting.get("generated", []):
                pairs = find_pairs(g["dir"], ctx.categories, check_sizes=False)
                leakage.check_generated(where, Path(g["dir"]), [p.stem for p in pairs], ctx.data_root, test_stems)
                leakage.refuse_test_content(where, leakage.pair_files(pairs), tests,
                                            "generate from training masks or new masks only (generation.mask_dir)")
        for name, why in skipped.items():
            ctx.log(f"[{self.key}] setting {name} left out: {why}")
        seeds = list(ctx.study_config(self.study)["detectors"]["seeds"])
        cfg = protocol_config(ctx, self.study, settings, seeds, self.folder(ctx))
        rows = run_protocol(cfg, force=self.key in ctx.forced, progress=ctx.progress, log=ctx.log)
        return {"results": str(self.folder(ctx) / "results.json"), "skipped": skipped,
                "settings": [s["name"] for s in settings], "seeds": seeds, "n_rows": len(to_plain(rows)),
                "paths": [str(self.folder(ctx) / "results.json")]}
