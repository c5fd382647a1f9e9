"""The study's stages, each a thin call into the project's own commands.

Each stage class says what it depends on (``deps``), what decides its result (``inputs``: config
subset and the files it reads; the digests of the upstream stamps are added by the pipeline), what it
writes (``run`` returns the outputs recorded in its stamp) and which of its outputs are cleared when its
inputs change (``clear``) or moved aside when it is forced (``reset``, training runs). Training stages
call :mod:`evaluation.study.leakage` before they train.
"""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

from dataset.files import few, natural_key
from dataset.pairs import Pair, find_pairs
from dataset.splits import parse_ratio
from runtime.errors import UserError

from ..folders import image_folder, mask_folder
from . import leakage
from .context import Ctx
from .stamps import file_digest, file_stat, folder_fingerprint

SUBSTITUTION_SETTINGS = ("real", "generated")
EXPANSION_SETTINGS = ("real", "real+generated", "real+filtered")


class StageStopped(Exception):
    """A training command stopped early on a signal (its checkpoint is saved); ``code`` is its exit status."""

    def __init__(self, stage: str, code: int) -> None:
        super().__init__(f"stage {stage} stopped (exit {code}); rerun the same command to resume")
        self.code = code


class Stage:
    kind = ""
    training = False  # a training run the study never deletes on its own (moved aside only with --force)

    def __init__(self, study: Optional[str], deps: list[str]) -> None:
        self.study = study
        self.deps = deps
        self.key = f"{study}.{self.kind}" if study else self.kind

    def inputs(self, ctx: Ctx) -> dict[str, Any]:
        raise NotImplementedError

    def run(self, ctx: Ctx) -> dict[str, Any]:
        raise NotImplementedError

    def clear(self, ctx: Ctx) -> list[Path]:
        """Outputs removed before a run whose inputs differ from the last attempt's."""
        return []

    def reset(self, ctx: Ctx) -> list[Path]:
        """Training run folders moved aside when the stage is forced."""
        return []

    def note(self, ctx: Ctx) -> str:
        """A short remark for --plan (e.g. how far a training run has got)."""
        return ""


# -- helpers ---------------------------------------------------------------------------------------
def _main_module():
    """``main.py``'s training command (:mod:`training.cli`)."""
    from training import cli

    return cli


def latest_weights(run_dir: Path) -> Optional[tuple[Path, int]]:
    """(weights file, iteration) a main.py run's ``latest.json`` points at, or None before its first checkpoint."""
    pointer = Path(run_dir) / "latest.json"
    try:
        data = json.loads(pointer.read_text())
        return Path(run_dir) / data["weights"], int(data["iteration"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _yaml_train(config: str, overrides: list[str]) -> dict[str, Any]:
    """The ``train:`` section main.py would resolve from ``config`` and ``--set`` overrides (validated)."""
    from ldm.config import load_config
    from training.options import apply_overrides

    cfg = apply_overrides(load_config(config), overrides, flag=f"--set (from {config})")
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


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


def check_main_options(argv: list[str]) -> Any:
    """main.py's own option parsing and checks on ``argv`` (no training); returns the resolved options."""
    from ldm.config import load_config
    from training.options import apply_overrides, parse_args, resolve_options

    cli = parse_args(argv)
    cfg = apply_overrides(load_config(cli.yaml_file), cli.set)
    return resolve_options(cli, cfg)


def running_trainer(run_dir: Path) -> Optional[str]:
    """``"PID: command"`` of another process running ``main.py`` on ``run_dir`` (read from /proc), else None."""
    import os

    run_dir = Path(run_dir).resolve()
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        if not any(a.endswith("main.py") for a in args):
            continue
        flags = dict(zip(args, args[1:]))
        name = flags.get("--name", "sd")
        root = flags.get("--output_root", flags.get("--OUTPUT_ROOT", "OUTPUT"))
        if name == run_dir.name and ((cwd / root).resolve() == run_dir.parent):
            return f"{entry.name}: {' '.join(a for a in args if a)}"
    return None


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


def _rm(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# -- split -----------------------------------------------------------------------------------------
class SplitStage(Stage):
    """The study's train/test split (made on first use) and a copy of its training masks."""

    kind = "split"

    def split_path(self, ctx: Ctx) -> Path:
        from ..splitfile import default_split_path

        sc = ctx.sc(self.study)
        return Path(sc["split"]) if sc["split"] else default_split_path(ctx.data_root, sc["ratio"], sc["seed"])

    def inputs(self, ctx: Ctx) -> dict[str, Any]:
        sc = ctx.sc(self.study)
        path = self.split_path(ctx)
        return {"data_root": ctx.data_root, "categories": ctx.cfg.get("categories"),
                "data": folder_fingerprint([image_folder(ctx.data_root), mask_folder(ctx.data_root)]),
                "ratio": sc["ratio"], "seed": sc["seed"], "split": str(path), "split_sha256": file_digest(path)}

    def masks_dir(self, ctx: Ctx) -> Path:
        return ctx.study_dir(self.study) / "train_masks"

    def clear(self, ctx: Ctx) -> list[Path]:
        return [self.masks_dir(ctx)]

    def run(self, ctx: Ctx) -> dict[str, Any]:
        from ..splitfile import get_split

        sc = ctx.sc(self.study)
        pairs = find_pairs(ctx.data_root, ctx.categories)
        split, path = get_split(pairs, self.split_path(ctx), sc["ratio"], sc["seed"], ctx.data_root, ctx.log)
        check_split_matches(split, path, pairs, ctx.data_root, self.study, sc["ratio"])
        by_stem = {p.stem: p for p in pairs}
        masks = self.masks_dir(ctx)
        _rm(masks)
        masks.mkdir(parents=True)
        for stem in split["train"]:
            shutil.copy2(by_stem[stem].mask, masks / by_stem[stem].mask.name)
        ctx.log(f"[{self.key}] {len(split['train'])} training / {len(split['test'])} test pairs ({path}); "
                f"training masks -> {masks}")
        return {"split": str(path), "split_sha256": file_digest(path), "n_train": len(split["train"]),
                "n_test": len(split["test"]),
                "train_masks": str(masks), "paths": [str(path), str(masks)]}


def check_split_matches(split: dict, path: Path, pairs: list[Pair], data_root: str, study: str, ratio: str) -> None:
    """A split file made for this dataset and this study's ratio, or a one-line error."""
    stems = {p.stem for p in pairs}
    listed = split["train"] + split["test"]
    missing = sorted((s for s in listed if s not in stems), key=natural_key)
    fix = (f"use the split made for this dataset, or set studies.{study}.split: null (or delete {path}) "
           "to make a new one")
    if missing:
        raise UserError(f"{path}: {len(missing)} sample(s) of the split are not in data_root {data_root} "
                        f"({few(missing)}); {fix}")
    unlisted = sorted(stems - set(listed), key=natural_key)
    if unlisted:
        raise UserError(f"{path}: {len(unlisted)} pair(s) of data_root {data_root} are in neither train nor test "
                        f"({few(unlisted)}); {fix}")
    want = parse_ratio(ratio)
    got = len(split["test"]) / max(1, len(listed))
    if abs(got - want) > max(0.02, 1.5 / max(1, len(listed))):
        raise UserError(f"{path}: {len(split['test'])} of {len(listed)} samples are test samples ({got:.3f}), but the "
                        f"{study} study is a {ratio} split ({want:.3f}); point studies.{study}.split at a {ratio} "
                        "split or set it to null")


# -- generator pre-training (procedural data) ------------------------------------------------------
class PretrainStage(Stage):
    """The generator pre-trained on procedural defects (dataset/procedural.py: no real image at all)."""

    kind = "pretrain"
    training = True

    def run_dir(self, ctx: Ctx) -> Path:
        return ctx.study_dir(self.study) / "pretrain"

    def argv(self, ctx: Ctx) -> list[str]:
        p = ctx.sc(self.study)["pretrain"]
        overrides = [f"data.procedural.n_per_category={int(p['n_per_category'])}", *p["set"]]
        return main_argv(ctx, "pretrain", ctx.study_dir(self.study), p["config"], overrides, [])

    def inputs(self, ctx: Ctx) -> dict[str, Any]:
        p = ctx.sc(self.study)["pretrain"]
        return {"argv": self.argv(ctx), "config_sha256": file_digest(p["config"])}

    def reset(self, ctx: Ctx) -> list[Path]:
        return [self.run_dir(ctx)]

    def note(self, ctx: Ctx) -> str:
        return _progress_note(self.run_dir(ctx))

    def run(self, ctx: Ctx) -> dict[str, Any]:
        argv = self.argv(ctx)
        from training.data import dataset_folder

        p = ctx.sc(self.study)["pretrain"]
        from omegaconf import OmegaConf

        cfg = OmegaConf.create(_yaml_train(p["config"], argv[argv.index("--set") + 1:]))
        saved = leakage.run_training_data(self.run_dir(ctx))
        if dataset_folder(None, cfg) is not None or (saved is not None and not saved["procedural"]):
            raise leakage.LeakError(f"leak: stage {self.key} must train on procedural data only "
                                    f"(data.procedural in {p['config']}, no data root)")
        run_main(self.key, argv, ctx.log, self.run_dir(ctx), ctx.progress)
        found = latest_weights(self.run_dir(ctx))
        if found is None:
            raise UserError(f"{self.run_dir(ctx)}: no checkpoint after training; check its log")
        return {"run": str(self.run_dir(ctx)), "ckpt": str(found[0]), "iteration": found[1],
                "ckpt_stat": file_stat(found[0]), "paths": [str(found[0])]}


def _progress_note(run_dir: Path) -> str:
    found = latest_weights(run_dir)
    return f"run folder at iteration {found[1]}" if found else ""


# -- generator -------------------------------------------------------------------------------------
class GeneratorStage(Stage):
    """DefFiller trained with main.py on the study's training split (resumes an existing run folder)."""

    kind = "generator"
    training = True

    def run_dir(self, ctx: Ctx) -> Path:
        g = ctx.sc(self.study)["generator"]
        return Path(g["run"]) if g["run"] else ctx.study_dir(self.study) / "generator"

    def argv(self, ctx: Ctx, split_path: str) -> list[str]:
        """main.py's flags; an existing run's own spelling of the data root and split is kept (same files)."""
        g = ctx.sc(self.study)["generator"]
        run_dir = self.run_dir(ctx)
        data_arg, split_arg = ctx.data_root, str(split_path)
        saved = leakage.run_training_data(run_dir)
        if saved is not None:
            if leakage.same_path(saved["data_root"], data_arg):
                data_arg = saved["data_root"]
            if leakage.same_path(saved["split"], split_arg):
                split_arg = saved["split"]
        extra = ["--DATA_ROOT", data_arg, "--split", split_arg]
        if ctx.sc(self.study)["pretrain"]["enabled"]:
            extra += ["--ckpt", ctx.outputs(f"{self.study}.pretrain")["ckpt"]]
        return main_argv(ctx, run_dir.name, run_dir.parent, g["config"], list(g["set"]), extra)

    def inputs(self, ctx: Ctx) -> dict[str, Any]:
        g = ctx.sc(self.study)["generator"]
        return {"config": g["config"], "config_sha256": file_digest(g["config"]), "set": list(g["set"]),
                "run": str(self.run_dir(ctx)), "device": ctx.cfg["device"], "threads": ctx.cfg.get("threads")}

    def reset(self, ctx: Ctx) -> list[Path]:
        run_dir = self.run_dir(ctx)
        if ctx.out.resolve() not in run_dir.resolve().parents:
            raise UserError(f"--force {self.key}: the run folder {run_dir} (generator.run) lies outside the study's "
                            f"folder {ctx.out}; the study does not move it: move it away yourself to retrain")
        return [run_dir]

    def note(self, ctx: Ctx) -> str:
        return _progress_note(self.run_dir(ctx))

    def run(self, ctx: Ctx) -> dict[str, Any]:
        _, split_path = ctx.split(self.study)
        run_dir = self.run_dir(ctx)
        leakage.check_generator_data(self.key, run_dir, ctx.data_root, str(split_path), ctx.test_stems(self.study))
        run_main(self.key, self.argv(ctx, str(split_path)), ctx.log, run_dir, ctx.progress)
        found = latest_weights(run_dir)
        if found is None:
            raise UserError(f"{run_dir}: no checkpoint after training; check its log")
        return {"run": str(run_dir), "ckpt": str(found[0]), "iteration": found[1], "ckpt_stat": file_stat(found[0]),
                "paths": [str(found[0])]}


# -- mask producer (expansion) ---------------------------------------------------------------------
class MaskgenStage(Stage):
    """maskgen trained on the study's training masks, then N new masks per category and their report."""

    kind = "maskgen"
    training = True

    def run_dir(self, ctx: Ctx) -> Path:
        return ctx.study_dir(self.study) / "maskgen"

    def inputs(self, ctx: Ctx) -> dict[str, Any]:
        m = ctx.sc(self.study)["maskgen"]
        return {"config": m["config"], "config_sha256": file_digest(m["config"]), "set": list(m["set"]),
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
        from maskgen.data import list_masks
        from maskgen.report import run_report
        from maskgen.train import train
        from runtime.device import pick_device

        m = ctx.sc(self.study)["maskgen"]
        masks_in = Path(ctx.outputs(f"{self.study}.split")["train_masks"])
        files = list_masks(masks_in)
        leakage.check_stems(self.key, [f.stem for f in files], ctx.test_stems(self.study),
                            f"the mask folder {masks_in}")
        run = self.run_dir(ctx)
        guard = run / "study_masks.json"
        listing = sorted(f.name for f in files)
        if guard.is_file() and json.loads(guard.read_text()).get("masks") != listing:
            raise UserError(f"{run}: this mask producer was trained on other masks than the study's training masks "
                            f"now in {masks_in}; rerun with --force {self.key} to retrain it (the old run is moved "
                            "aside)")
        from dataset.io import write_json_atomic

        run.mkdir(parents=True, exist_ok=True)
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


# -- generation ------------------------------------------------------------------------------------
class GenerationStage(Stage):
    """Generated pairs from the study's masks (training masks, or the mask producer's new masks)."""

    kind = "generation"

    def folder(self, ctx: Ctx) -> Path:
        return ctx.study_dir(self.study) / "generated"

    def inputs(self, ctx: Ctx) -> dict[str, Any]:
        return {**ctx.sc(self.study)["generation"], "device": ctx.cfg["device"]}

    def clear(self, ctx: Ctx) -> list[Path]:
        return [self.folder(ctx)]

    def mask_dir(self, ctx: Ctx) -> Path:
        g = ctx.sc(self.study)["generation"]
        if g["mask_dir"]:
            return Path(g["mask_dir"])
        if self.study == "expansion":
            return Path(ctx.outputs(f"{self.study}.maskgen")["masks"])
        return Path(ctx.outputs(f"{self.study}.split")["train_masks"])

    def run(self, ctx: Ctx) -> dict[str, Any]:
        import torch

        from inference.cli import tqdm_progress
        from inference.generate import GenerationOptions, generate_dataset, load_pipeline
        from inference.jobs import JobSpec

        g = ctx.sc(self.study)["generation"]
        if int(ctx.cfg.get("threads") or 0) > 0:
            torch.set_num_threads(int(ctx.cfg["threads"]))
        ckpt = ctx.outputs(f"{self.study}.generator")["ckpt"]
        opts = GenerationOptions(sampler=g["sampler"], steps=g["steps"], guidance_scale=float(g["guidance_scale"]),
                                 precision=g["precision"], output_size=g["output_size"], grayscale=bool(g["grayscale"]),
                                 batch_size=int(g["batch_size"]))
        pipe = load_pipeline(ckpt, device=ctx.cfg["device"], precision=g["precision"])
        folder = self.folder(ctx)
        spec = JobSpec(self.mask_dir(ctx), int(g["num_per_mask"]), int(g["seed"]))
        ctx.log(f"[{self.key}] {ckpt} -> {folder} ({opts.sampler} {opts.steps} steps, guidance {opts.guidance_scale})")
        with warnings.catch_warnings():  # maskgen.sample's manifest sits beside the masks
            warnings.filterwarnings("ignore", message=".*maskgen_manifest.json")
            generate_dataset(pipe, spec, folder, opts,
                             progress=tqdm_progress(f"{self.key} ({opts.sampler})", ctx.progress))
        n = len(json.loads((folder / "generation.json").read_text())["images"])
        return {"generated": str(folder), "n": n, "mask_dir": str(spec.mask_dir), "paths": [str(folder)]}


# -- IoU sample filter (expansion) -----------------------------------------------------------------
def detector_cfg(ctx: Ctx, study: str, seed: int):
    from ..protocols import detector_config

    d = ctx.sc(study)["detectors"]
    from omegaconf import OmegaConf

    det = OmegaConf.create({"name": f"seed{seed}", "config": d["config"],
                            "overrides": [*d["overrides"], *ctx.device_overrides(), f"train.seed={int(seed)}"]})
    return detector_config(det, [])


class FilterStage(Stage):
    """A detector trained on the study's real training split keeps the generated pairs it agrees with."""

    kind = "filter"

    def folder(self, ctx: Ctx) -> Path:
        return ctx.study_dir(self.study) / "filter"

    def inputs(self, ctx: Ctx) -> dict[str, Any]:
        from ..config import to_plain

        f = ctx.sc(self.study)["filter"]
        d = ctx.sc(self.study)["detectors"]
        return {**f, "detector": to_plain(detector_cfg(ctx, self.study, f["seed"])),
                "detector_config_sha256": file_digest(d["config"])}

    def clear(self, ctx: Ctx) -> list[Path]:
        return [self.folder(ctx)]

    def run(self, ctx: Ctx) -> dict[str, Any]:
        from ..detector.predict import Detector
        from ..detector.train import train_detector
        from ..sample_filter import filter_samples

        f = ctx.sc(self.study)["filter"]
        train_pairs, _ = ctx.pairs(self.study)
        leakage.check_stems(self.key, [p.stem for p in train_pairs], ctx.test_stems(self.study), "its training pairs")
        det_dir = self.folder(ctx) / "detector"
        train_detector(detector_cfg(ctx, self.study, f["seed"]), train_pairs, det_dir, resume=True, log=ctx.log,
                       progress=ctx.progress)
        det = Detector(det_dir / "detector.pt", ctx.cfg["device"])
        kept = self.folder(ctx) / "kept"
        summary = filter_samples(ctx.outputs(f"{self.study}.generation")["generated"], kept,
                                 lambda paths: det(paths, progress=ctx.progress), float(f["threshold"]),
                                 float(f["bin_threshold"]), ctx.categories, overwrite=True, log=ctx.log)
        return {"kept": str(kept), "n_kept": summary["kept"], "total": summary["total"],
                "per_category": summary["per_category"], "mean_iou": summary["mean_iou"],
                "detector": str(det_dir / "detector.pt"), "paths": [str(kept / "filter.json")]}


# -- detectors -------------------------------------------------------------------------------------
class DetectorsStage(Stage):
    """Every setting of the study x every seed (evaluation.protocols.run_protocol; finished runs are reused)."""

    kind = "detectors"

    def folder(self, ctx: Ctx) -> Path:
        return ctx.study_dir(self.study) / "detectors"

    def inputs(self, ctx: Ctx) -> dict[str, Any]:
        d = ctx.sc(self.study)["detectors"]
        return {**d, "config_sha256": file_digest(d["config"]), "device": ctx.device_overrides()}

    def settings(self, ctx: Ctx) -> tuple[list[dict], dict[str, str]]:
        """Protocol settings and the settings left out (with why)."""
        gen = ctx.outputs(f"{self.study}.generation")["generated"]
        if self.study == "substitution":
            return [{"name": "real", "real": True},
                    {"name": "generated", "real": False, "generated": [{"dir": gen, "n": None}]}], {}
        settings = [{"name": "real", "real": True},
                    {"name": "real+generated", "real": True, "generated": [{"dir": gen, "n": None}]}]
        filt = ctx.outputs(f"{self.study}.filter")
        if filt["n_kept"] > 0:
            settings.append({"name": "real+filtered", "real": True, "generated": [{"dir": filt["kept"], "n": None}]})
            return settings, {}
        threshold = ctx.sc(self.study)["filter"]["threshold"]
        return settings, {"real+filtered": f"no generated pair reached IoU >= {threshold}"}

    def run(self, ctx: Ctx) -> dict[str, Any]:
        from omegaconf import OmegaConf

        from ..config import to_plain
        from ..protocols import run_protocol

        sc = ctx.sc(self.study)
        split, split_path = ctx.split(self.study)
        test_stems = set(split["test"])
        settings, skipped = self.settings(ctx)
        for setting in settings:
            where = f"{self.key} (setting {setting['name']})"
            if setting.get("real"):
                leakage.check_stems(where, split["train"], test_stems, f"the split {split_path}")
            for g in setting.get("generated", []):
                stems = [p.stem for p in find_pairs(g["dir"], ctx.categories, check_sizes=False)]
                leakage.check_generated(where, Path(g["dir"]), stems, ctx.data_root, test_stems)
        for name, why in skipped.items():
            ctx.log(f"[{self.key}] setting {name} left out: {why}")
        d = sc["detectors"]
        detectors = [{"name": f"seed{s}", "config": d["config"],
                      "overrides": [*d["overrides"], *ctx.device_overrides(), f"train.seed={int(s)}"]}
                     for s in d["seeds"]]
        cfg = OmegaConf.create({"protocol": self.study, "data_root": ctx.data_root, "ratio": sc["ratio"],
                                "seed": sc["seed"], "split": str(split_path), "out": str(self.folder(ctx)),
                                "categories": ctx.cfg.get("categories"), "detectors": detectors,
                                "detector_overrides": [], "settings": settings})
        rows = run_protocol(cfg, force=self.key in ctx.forced, progress=ctx.progress, log=ctx.log)
        return {"results": str(self.folder(ctx) / "results.json"), "skipped": skipped,
                "settings": [s["name"] for s in settings], "seeds": list(d["seeds"]), "n_rows": len(to_plain(rows)),
                "paths": [str(self.folder(ctx) / "results.json")]}


# -- fidelity --------------------------------------------------------------------------------------
class FidelityStage(Stage):
    """How close generated pairs are to real ones: detector IoU, mask adherence, FID/KID."""

    kind = "fidelity"

    def folder(self, ctx: Ctx) -> Path:
        return ctx.study_dir(self.study) / "fidelity"

    def inputs(self, ctx: Ctx) -> dict[str, Any]:
        from ..fid import find_inception_weights

        fid = dict(ctx.cfg["fidelity"])
        try:
            weights = find_inception_weights(fid["inception"]) if fid["fid"] else None
        except UserError:
            weights = None
        return {**fid, "inception_found": str(weights) if weights else None, "device": ctx.cfg["device"]}

    def clear(self, ctx: Ctx) -> list[Path]:
        return [self.folder(ctx)]

    def run(self, ctx: Ctx) -> dict[str, Any]:
        from .fidelity import measure

        result = measure(ctx, self.study, self.folder(ctx))
        return {"fidelity": str(self.folder(ctx) / "fidelity.json"), "fid": result["fid"].get("skipped", "computed"),
                "paths": [str(self.folder(ctx) / "fidelity.json")]}


# -- report ----------------------------------------------------------------------------------------
class ReportStage(Stage):
    kind = "report"

    def folder(self, ctx: Ctx) -> Path:
        return ctx.out / "report"

    def inputs(self, ctx: Ctx) -> dict[str, Any]:
        return {"paper": ctx.cfg.get("paper"), "targets": ctx.cfg["targets"], "report": ctx.cfg["report"],
                "profile": ctx.cfg.get("profile"), "name": ctx.cfg["name"]}

    def clear(self, ctx: Ctx) -> list[Path]:
        return [self.folder(ctx)]

    def run(self, ctx: Ctx) -> dict[str, Any]:
        from .report import write_report

        path = write_report(ctx, self.folder(ctx))
        return {"report": str(path), "paths": [str(path)]}


def build_stages(cfg: dict[str, Any]) -> list[Stage]:
    """The stages of the enabled studies in execution order (each study in turn, then the report)."""
    from .config import enabled_studies

    stages: list[Stage] = []
    for study in enabled_studies(cfg):
        sc = cfg["studies"][study]
        k = lambda kind: f"{study}.{kind}"  # noqa: E731
        stages.append(SplitStage(study, []))
        gen_deps = [k("split")]
        if sc["pretrain"]["enabled"]:
            stages.append(PretrainStage(study, []))
            gen_deps.append(k("pretrain"))
        stages.append(GeneratorStage(study, gen_deps))
        if study == "expansion":
            stages.append(MaskgenStage(study, [k("split")]))
            stages.append(GenerationStage(study, [k("generator"), k("maskgen")]))
            stages.append(FilterStage(study, [k("split"), k("generation")]))
            stages.append(DetectorsStage(study, [k("split"), k("generation"), k("filter")]))
        else:
            stages.append(GenerationStage(study, [k("generator"), k("split")]))
            stages.append(DetectorsStage(study, [k("split"), k("generation")]))
        stages.append(FidelityStage(study, [k("split"), k("generation"), k("detectors")]))
    stages.append(ReportStage(None, [s.key for s in stages if s.kind == "fidelity"]))
    return stages

