"""The generator stages: pre-training on procedural data and DefFiller on the study's training split,
both main.py run in this process on a run folder of the study (or a released generator used as is)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from runtime.digest import file_sha256_or_none, file_stat, yaml_values_sha256_or_none
from runtime.errors import UserError
from training.runs import check_main_options, latest_weights, resolved_config, running_trainer

from .. import leakage
from ..context import Ctx
from .base import Stage, StageStopped


def _main_module():
    """``main.py``'s training command (:mod:`training.cli`)."""
    from training import cli

    return cli


def main_argv(ctx: Ctx, name: str, output_root: Path, config: str, overrides: list[str],
              extra: list[str]) -> list[str]:
    argv = ["--name", name, "--output_root", str(output_root), "--config", str(config), *extra]
    if ctx.cfg["device"] != "auto":
        argv += ["--device", str(ctx.cfg["device"])]
    if int(ctx.cfg.get("threads") or 0) > 0:
        argv += ["--threads", str(int(ctx.cfg["threads"]))]
    if overrides:
        argv += ["--set", *overrides]
    return argv


def run_main(stage: str, argv: list[str], log: Callable[[str], None], run_dir: Path, progress: bool = True) -> None:
    """main.py in this process on ``run_dir`` (refused while another process trains that run folder)."""
    argv = argv if progress else [*argv, "--no_progress"]
    other = running_trainer(run_dir)
    if other is not None:
        raise UserError(f"{run_dir}: another process is training this run right now (pid {other}); let it "
                        f"finish or stop it, then rerun the study (stage {stage} resumes the run)")
    log(f"[{stage}] python main.py {' '.join(argv)}")
    try:
        code = _main_module().main(argv)
    except UserError as exc:
        if "resuming with a different" not in str(exc):
            raise
        raise UserError(f"{exc}; in the study: restore the run's settings, or rerun with --force {stage} to "
                        "retrain from scratch (the old run folder is moved aside)") from None
    if code:
        raise StageStopped(stage, int(code))


class PretrainStage(Stage):
    """The generator pre-trained on procedural defects (dataset/procedural.py: no real image at all)."""

    kind = "pretrain"
    training = True

    def run_dir(self, ctx: Ctx) -> Path:
        return ctx.study_dir(self.study) / "pretrain"

    def argv(self, ctx: Ctx) -> list[str]:
        p = ctx.study_config(self.study)["pretrain"]
        overrides = [f"data.procedural.n_per_category={int(p['n_per_category'])}", *p["set"]]
        return main_argv(ctx, "pretrain", ctx.study_dir(self.study), p["config"], overrides, [])

    def inputs(self, ctx: Ctx) -> dict[str, Any]:
        p = ctx.study_config(self.study)["pretrain"]
        return {"argv": self.argv(ctx), "config_values_sha256": yaml_values_sha256_or_none(p["config"])}

    def reset(self, ctx: Ctx) -> list[Path]:
        return [self.run_dir(ctx)]

    def note(self, ctx: Ctx) -> str:
        return _progress_note(self.run_dir(ctx))

    def run(self, ctx: Ctx) -> dict[str, Any]:
        argv = self.argv(ctx)
        from training.data import dataset_folder

        p = ctx.study_config(self.study)["pretrain"]
        from omegaconf import OmegaConf

        cfg = OmegaConf.create(resolved_config(p["config"], argv[argv.index("--set") + 1:]))
        saved = leakage.run_training_data(self.run_dir(ctx))
        if dataset_folder(None, cfg) is not None or (saved is not None and not saved["procedural"]):
            raise leakage.LeakError(f"leak: stage {self.key} must train on procedural data only "
                                    f"(data.procedural in {p['config']}, no data root)")
        _, split_path = ctx.split(self.study)
        how = leakage.check_init_checkpoint(self.key, check_main_options(argv).ckpt, split_path,
                                            ctx.test_stems(self.study), ctx.test_digests(self.study))
        ctx.log(f"[{self.key}] initial weights: {how}")
        run_main(self.key, argv, ctx.log, self.run_dir(ctx), ctx.progress)
        found = latest_weights(self.run_dir(ctx))
        if found is None:
            raise UserError(f"{self.run_dir(ctx)}: no checkpoint after training; check its log")
        return {"run": str(self.run_dir(ctx)), "ckpt": str(found[0]), "iteration": found[1],
                "ckpt_stat": file_stat(found[0]), "paths": [str(found[0])]}


def _progress_note(run_dir: Path) -> str:
    found = latest_weights(run_dir)
    return f"run folder at iteration {found[1]}" if found else ""


class GeneratorStage(Stage):
    """DefFiller trained with main.py on the study's training split (resumes an existing run folder)."""

    kind = "generator"
    training = True

    def run_dir(self, ctx: Ctx) -> Path:
        g = ctx.study_config(self.study)["generator"]
        return Path(g["run"]) if g["run"] else ctx.study_dir(self.study) / "generator"

    def argv(self, ctx: Ctx, split_path: str) -> list[str]:
        """main.py's flags; an existing run's own spelling of the data root and split is kept (same files)."""
        g = ctx.study_config(self.study)["generator"]
        run_dir = self.run_dir(ctx)
        data_arg, split_arg = ctx.data_root, str(split_path)
        saved = leakage.run_training_data(run_dir)
        if saved is not None:
            if leakage.same_path(saved["data_root"], data_arg):
                data_arg = saved["data_root"]
            if leakage.same_path(saved["split"], split_arg):
                split_arg = saved["split"]
        extra = ["--DATA_ROOT", data_arg, "--split", split_arg]
        if ctx.study_config(self.study)["pretrain"]["enabled"]:
            extra += ["--ckpt", ctx.outputs(f"{self.study}.pretrain")["ckpt"]]
        return main_argv(ctx, run_dir.name, run_dir.parent, g["config"], list(g["set"]), extra)

    def trains(self, ctx: Ctx) -> bool:
        return self.release(ctx) is None

    def release(self, ctx: Ctx) -> Optional[Path]:
        """The released generator file the study uses instead of training one (None: it trains)."""
        release = ctx.study_config(self.study)["generator"]["release"]
        return Path(release) if release else None

    def inputs(self, ctx: Ctx) -> dict[str, Any]:
        g = ctx.study_config(self.study)["generator"]
        if self.release(ctx) is not None:
            return {"release": str(self.release(ctx)), "release_sha256": file_sha256_or_none(self.release(ctx))}
        return {"config": g["config"], "config_values_sha256": yaml_values_sha256_or_none(g["config"]),
                "set": list(g["set"]),
                "run": str(self.run_dir(ctx)), "device": ctx.cfg["device"], "threads": ctx.cfg.get("threads")}

    def reset(self, ctx: Ctx) -> list[Path]:
        if self.release(ctx) is not None:
            return []
        run_dir = self.run_dir(ctx)
        if ctx.out.resolve() not in run_dir.resolve().parents:
            raise UserError(f"--force {self.key}: the run folder {run_dir} (generator.run) lies outside the study's "
                            f"folder {ctx.out}; the study does not move it: move it away yourself to retrain")
        return [run_dir]

    def note(self, ctx: Ctx) -> str:
        return "" if self.release(ctx) is not None else _progress_note(self.run_dir(ctx))

    def run(self, ctx: Ctx) -> dict[str, Any]:
        _, split_path = ctx.split(self.study)
        release = self.release(ctx)
        if release is not None:
            from ldm.checkpoint import read_metadata

            ctx.log(f"[{self.key}] release {release}: {leakage.check_release(self.key, release, split_path)}")
            return {"run": None, "ckpt": str(release), "release": True,
                    "iteration": int(read_metadata(release).get("iteration") or 0), "ckpt_stat": file_stat(release),
                    "paths": [str(release)]}
        run_dir = self.run_dir(ctx)
        test_stems, tests = ctx.test_stems(self.study), ctx.test_digests(self.study)
        stems, run_split = leakage.check_generator_data(self.key, run_dir, ctx.data_root, str(split_path), test_stems)
        by_stem = ctx.pairs_by_stem()
        leakage.refuse_test_content(self.key, leakage.pair_files(by_stem[s] for s in stems if s in by_stem), tests,
                                    f"it is a training pair of {run_split}; keep copies of test items out of the "
                                    "training split")
        argv = self.argv(ctx, str(split_path))
        how = leakage.check_init_checkpoint(self.key, check_main_options(argv).ckpt, split_path, test_stems, tests)
        ctx.log(f"[{self.key}] initial weights: {how}")
        found = latest_weights(run_dir)
        if found is not None:
            leakage.ckpt_split_unchanged(self.key, found[0])
        leakage.split_unchanged(self.key, run_dir, run_split)
        run_main(self.key, argv, ctx.log, run_dir, ctx.progress)
        found = latest_weights(run_dir)
        if found is None:
            raise UserError(f"{run_dir}: no checkpoint after training; check its log")
        return {"run": str(run_dir), "ckpt": str(found[0]), "iteration": found[1], "ckpt_stat": file_stat(found[0]),
                "paths": [str(found[0])]}
