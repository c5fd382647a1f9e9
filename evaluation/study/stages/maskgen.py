"""The mask producer stage (expansion): maskgen trained on the study's training masks, new masks, report."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runtime.digest import yaml_values_sha256_or_none
from runtime.errors import UserError

from .. import leakage
from ..context import Ctx
from .base import Stage


class MaskgenStage(Stage):
    """maskgen trained on the study's training masks, then N new masks per category and their report."""

    kind = "maskgen"
    training = True

    def run_dir(self, ctx: Ctx) -> Path:
        return ctx.study_dir(self.study) / "maskgen"

    def inputs(self, ctx: Ctx) -> dict[str, Any]:
        m = ctx.study_config(self.study)["maskgen"]
        return {"config": m["config"], "config_values_sha256": yaml_values_sha256_or_none(m["config"]),
                "set": list(m["set"]),
                "n_per_category": m["n_per_category"], "sample_set": list(m["sample_set"]), "seed": m["seed"],
                "calibrate": dict(m["calibrate"]), "device": ctx.cfg["device"], "fid": ctx.cfg["fidelity"]["fid"]}

    def clear(self, ctx: Ctx) -> list[Path]:
        return [self.run_dir(ctx) / "masks", self.run_dir(ctx) / "report"]

    def reset(self, ctx: Ctx) -> list[Path]:
        return [self.run_dir(ctx)]

    def run(self, ctx: Ctx) -> dict[str, Any]:
        from maskgen import calibrate as mg_calibrate
        from maskgen import sample as mg_sample
        from maskgen.config import load_config
        from maskgen.data import find_mask_files
        from maskgen.report import run_report
        from maskgen.train import train
        from runtime.device import pick_device

        m = ctx.study_config(self.study)["maskgen"]
        masks_in = Path(ctx.outputs(f"{self.study}.split")["train_masks"])
        files = find_mask_files(masks_in)
        leakage.check_stems(self.key, [f.stem for f in files], ctx.test_stems(self.study),
                            f"the mask folder {masks_in}")
        leakage.refuse_test_content(self.key, files, ctx.test_digests(self.study),
                                    "train the mask producer on the study's training masks only")
        run = self.run_dir(ctx)
        guard = run / "study_masks.json"
        listing = sorted(f.name for f in files)
        if guard.is_file() and json.loads(guard.read_text()).get("masks") != listing:
            raise UserError(f"{run}: this mask producer was trained on other masks than the study's training masks "
                            f"now in {masks_in}; rerun with --force {self.key} to retrain it (the old run is moved "
                            "aside)")
        from dataset.io import write_json_atomic

        run.mkdir(parents=True, exist_ok=True)
        leakage.split_unchanged(self.key, run, ctx.split(self.study)[1])
        write_json_atomic({"masks": listing}, guard)
        cfg = load_config(m["config"], list(m["set"]))
        device = str(pick_device(ctx.cfg["device"]))
        if int(ctx.cfg.get("threads") or 0) > 0:
            import torch

            torch.set_num_threads(int(ctx.cfg["threads"]))
        summary = train(cfg, masks_in, run, device=device, progress=ctx.progress)
        calibration = run / "calibration.json"
        calibration.unlink(missing_ok=True)
        quiet = [] if ctx.progress else ["--no_progress"]
        c = m["calibrate"]
        if c["enabled"]:  # its seed differs from the sampling seed (checked when the config is read)
            argv = ["--ckpt", str(run), "--data_root", str(masks_in), "--n_per_category", str(int(c["n_per_category"])),
                    "--seed", str(int(c["seed"])), "--device", str(ctx.cfg["device"]), *quiet]
            if m["sample_set"]:
                argv += ["--set", *m["sample_set"]]
            ctx.log(f"[{self.key}] python -m maskgen.calibrate {' '.join(argv)}")
            mg_calibrate.main(argv)
        masks_out = run / "masks"
        argv = ["--ckpt", str(run), "--out", str(masks_out), "--n_per_category", str(int(m["n_per_category"])),
                "--seed", str(int(m["seed"])), "--overwrite", "--device", str(ctx.cfg["device"]),
                "--calibration", str(calibration) if c["enabled"] else "none"]
        argv += quiet
        if m["sample_set"]:
            argv += ["--set", *m["sample_set"]]
        ctx.log(f"[{self.key}] python -m maskgen.sample {' '.join(argv)}")
        mg_sample.main(argv)
        report = run_report(masks_in, masks_out, run / "report", ctx.categories,
                            fid="auto" if ctx.cfg["fidelity"]["fid"] else "skip",
                            inception=ctx.cfg["fidelity"]["inception"], device=device, log=ctx.log)
        # the same statistics against the held-out test masks (read for scoring only, never trained on)
        held_out = [p.mask for p in ctx.pairs(self.study)[1]]
        run_report(held_out, masks_out, run / "report_heldout", ctx.categories, fid="skip", log=ctx.log)
        return {"run": str(run), "masks": str(masks_out), "report": str(run / "report" / "report.json"),
                "report_heldout": str(run / "report_heldout" / "report.json"),
                "epochs": summary["epochs_done"], "train_minutes": summary["minutes"],
                "n_masks": sum(v["n_generated"] for v in report["categories"].values()),
                "paths": [str(masks_out), str(run / "report" / "report.json")]}
