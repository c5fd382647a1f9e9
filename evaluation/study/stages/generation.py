"""The generation stage: generated pairs from the study's masks with the trained generator."""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any, Optional

from .. import leakage
from ..context import Ctx
from .base import Stage


def check_producers(ctx: Ctx, study: str, stage: str) -> None:
    """The generator (and mask producer) whose outputs ``stage`` uses still see the split they trained on."""
    gen = ctx.outputs(f"{study}.generator")
    if gen.get("release"):
        leakage.check_release(f"{study}.generator", gen["ckpt"], ctx.split(study)[1])
    else:
        leakage.split_unchanged(f"{study}.generator", gen["run"])
        leakage.ckpt_split_unchanged(f"{study}.generator", gen["ckpt"])
    if study == "expansion":
        leakage.split_unchanged(f"{study}.maskgen", ctx.outputs(f"{study}.maskgen")["run"])


def seeded_setting(name: str, seed: int, seeds: list[int]) -> str:
    """A detector setting's name for the pairs of one generation seed (the first seed keeps the plain name)."""
    return name if seed == seeds[0] else f"{name} (generation seed {seed})"


def plain_setting(name: str) -> str:
    """The setting a per-seed name belongs to (the inverse of :func:`seeded_setting`)."""
    return re.sub(r" \(generation seed \d+\)", "", name)


def generation_runs(ctx: Ctx, study: str) -> list[dict[str, Any]]:
    """``{"seed", "dir"}`` of every generation seed of a finished generation stage (first seed first)."""
    out = ctx.outputs(f"{study}.generation")
    return out.get("runs") or [{"seed": None, "dir": out["generated"]}]


def generation_options(g: dict[str, Any]):
    """The study config's ``generation`` section as :class:`inference.generate.GenerationOptions` (checked)."""
    from inference.generate import GenerationOptions

    low, interval = g.get("guidance_low"), g.get("guidance_interval")
    return GenerationOptions(sampler=g["sampler"], steps=g["steps"], guidance_scale=float(g["guidance_scale"]),
                             guidance_low=tuple(low) if low is not None else None,
                             guidance_interval=tuple(interval) if interval is not None else None,
                             precision=g["precision"],
                             output_size=g["output_size"], grayscale=bool(g["grayscale"]),
                             batch_size=int(g["batch_size"]))

class GenerationStage(Stage):
    """Generated pairs from the study's masks (training masks, or the mask producer's new masks)."""

    kind = "generation"

    def folder(self, ctx: Ctx, seed: Optional[int] = None) -> Path:
        """``generated/`` for the first generation seed, ``generated_seed<s>/`` for the others."""
        seeds = ctx.study_config(self.study)["generation"]["seeds"]
        name = "generated" if seed is None or seed == seeds[0] else f"generated_seed{seed}"
        return ctx.study_dir(self.study) / name

    def inputs(self, ctx: Ctx) -> dict[str, Any]:
        g = dict(ctx.study_config(self.study)["generation"])
        if g.get("guidance_interval") is None:  # a key added later: unset, it leaves finished runs up to date
            g.pop("guidance_interval", None)
        return {**g, "device": ctx.cfg["device"]}

    def clear(self, ctx: Ctx) -> list[Path]:
        return [self.folder(ctx)] + sorted(ctx.study_dir(self.study).glob("generated_seed*"))

    def mask_dir(self, ctx: Ctx) -> Path:
        g = ctx.study_config(self.study)["generation"]
        if g["mask_dir"]:
            return Path(g["mask_dir"])
        if self.study == "expansion":
            return Path(ctx.outputs(f"{self.study}.maskgen")["masks"])
        return Path(ctx.outputs(f"{self.study}.split")["train_masks"])

    def run(self, ctx: Ctx) -> dict[str, Any]:
        from inference.jobs import list_masks
        from runtime.parallel import run_jobs, threads_per_job

        g = ctx.study_config(self.study)["generation"]
        check_producers(ctx, self.study, self.key)
        ckpt = ctx.outputs(f"{self.study}.generator")["ckpt"]
        opts = generation_options(g)
        mask_dir = self.mask_dir(ctx)
        with warnings.catch_warnings():  # maskgen.sample's manifest sits beside the masks
            warnings.filterwarnings("ignore", message=".*maskgen_manifest.json")
            leakage.refuse_test_content(self.key, list_masks(mask_dir), ctx.test_digests(self.study),
                                        "generate from training masks or new masks only (generation.mask_dir)",
                                        use="generate from")
        low = f", low frequencies {opts.guidance_low[0]:g} (box {opts.guidance_low[1]})" if opts.guidance_low else ""
        jobs = min(int(ctx.cfg.get("jobs") or 1), len(g["seeds"]))
        threads = int(ctx.cfg.get("threads") or 0)
        threads = threads_per_job(threads, jobs) if jobs > 1 else threads
        calls = []
        for seed in g["seeds"]:
            folder = self.folder(ctx, seed)
            ctx.log(f"[{self.key}] {ckpt} -> {folder} ({opts.sampler} {opts.steps} steps, guidance "
                    f"{opts.guidance_scale}{low}, seed {seed})")
            calls.append((ckpt, ctx.cfg["device"], str(mask_dir), int(g["num_per_mask"]), int(seed), str(folder), opts,
                          threads, f"{self.key} (seed {seed})", ctx.progress and jobs == 1))
        if jobs > 1:
            ctx.log(f"[{self.key}] {len(calls)} generation seeds, {jobs} at a time in worker processes")
        counts = run_jobs(generate_seed, calls, jobs,
                          on_done=lambda i, n: ctx.log(f"[{self.key}] seed {g['seeds'][i]}: {n} pairs"))
        runs = [{"seed": int(seed), "dir": str(self.folder(ctx, seed)), "n": n} for seed, n in zip(g["seeds"], counts)]
        return {"generated": runs[0]["dir"], "n": runs[0]["n"], "mask_dir": str(mask_dir), "runs": runs,
                "paths": [r["dir"] for r in runs]}


def generate_seed(ckpt: str, device: str, mask_dir: str, num_per_mask: int, seed: int, folder: str, opts: Any,
                  threads: int, label: str, progress: bool) -> int:
    """One generation seed's pairs in ``folder`` (resumed where a run stopped); returns how many pairs it holds."""
    import torch

    from inference.cli import tqdm_progress
    from inference.generate import generate_dataset, load_pipeline
    from inference.jobs import JobSpec

    if threads > 0:
        torch.set_num_threads(threads)
    pipe = load_pipeline(ckpt, device=device, precision=opts.precision)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*maskgen_manifest.json")
        generate_dataset(pipe, JobSpec(Path(mask_dir), num_per_mask, seed), Path(folder), opts,
                         progress=tqdm_progress(label, progress))
    return len(json.loads((Path(folder) / "generation.json").read_text())["images"])
