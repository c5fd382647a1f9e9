"""Checks before anything runs: the dataset folder, every command's config and options, weight files.

Each problem is one line naming the file and the fix; :func:`preflight` returns them all so that
``--plan`` can list every missing weight file of a config at once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from dataset.pairs import IMAGE_DIRS, MASK_DIRS
from dataset.splits import load_split
from runtime.errors import UserError
from training.runs import check_main_options, latest_weights

from . import leakage
from .config import enabled_studies
from .context import Ctx
from .stages import GeneratorStage, PretrainStage, SplitStage, detector_cfg, main_argv


def check_data_root(root: str) -> None:
    path = Path(root)
    fix = (f"put SD-Saliency-900 there ({IMAGE_DIRS[0]}/ + {MASK_DIRS[0]}/, or {IMAGE_DIRS[1]}/ + "
           f"{MASK_DIRS[1]}/) or pass --set data_root=PATH")
    if not path.is_dir():
        raise UserError(f"data_root {path}: dataset folder not found; {fix}")
    for options, what in ((IMAGE_DIRS, "image"), (MASK_DIRS, "mask")):
        if not any((path / d).is_dir() for d in options):
            raise UserError(f"data_root {path}: no {what} folder ({' or '.join(options)}); {fix}")


def _collect(errors: list[str], check: Callable[[], None]) -> None:
    try:
        check()
    except UserError as exc:
        errors.append(str(exc))


def _weights_exist(ckpt: str | None, what: str, where: str) -> None:
    from training.options import DEFAULT_CKPT, RELEASE_URL

    if ckpt is None or Path(ckpt).is_file():
        return
    if Path(ckpt) == Path(DEFAULT_CKPT) or Path(ckpt).name == Path(DEFAULT_CKPT).name:
        raise UserError(f"{ckpt}: initial weights of {what} not found (its train.ckpt, {where}); download "
                        f"diffusion_pytorch_model.bin from {RELEASE_URL} and save it as {Path(ckpt).resolve()}")
    raise UserError(f"{ckpt}: initial weights of {what} not found (train.ckpt of {where}); put the file there or "
                    "change train.ckpt (generator.set)")


def check_provenance(ctx: Ctx, study: str, ckpt: str | None) -> None:
    """The generator's initial weights name data without the study's test items, checked as its stage will;
    only once the study's split exists (its first run makes it)."""
    split_path = SplitStage(study, []).split_path(ctx)
    if ckpt is None or not Path(ckpt).is_file() or not split_path.is_file():
        return
    test_stems = set(load_split(split_path)["test"])
    by_stem = ctx.pairs_by_stem()
    tests = leakage.test_digests([by_stem[s] for s in sorted(test_stems) if s in by_stem])
    leakage.check_init_checkpoint(f"{study}.generator", ckpt, split_path, test_stems, tests)


def check_generator(ctx: Ctx, study: str) -> None:
    """main.py's own option checks on the generator (and pre-training) command, and their weight files."""
    study_cfg = ctx.study_config(study)
    gen = GeneratorStage(study, [])
    release = gen.release(ctx)
    if release is not None:  # checked against the split as its stage will, once the split exists
        split_path = SplitStage(study, []).split_path(ctx)
        if split_path.is_file():
            leakage.check_release(f"{study}.generator", release, split_path)
        return
    placeholder = "<split>"
    argv = main_argv(ctx, gen.run_dir(ctx).name, gen.run_dir(ctx).parent, study_cfg["generator"]["config"],
                     list(study_cfg["generator"]["set"]), ["--DATA_ROOT", ctx.data_root, "--split", placeholder])
    opts = check_main_options(argv)
    if not study_cfg["pretrain"]["enabled"] and latest_weights(gen.run_dir(ctx)) is None:
        _weights_exist(opts.ckpt, f"studies.{study}.generator", f"{study_cfg['generator']['config']} + generator.set")
        check_provenance(ctx, study, opts.ckpt)
    if study_cfg["pretrain"]["enabled"]:
        pre = PretrainStage(study, [])
        popts = check_main_options(pre.argv(ctx))
        if latest_weights(pre.run_dir(ctx)) is None:
            _weights_exist(popts.ckpt, f"studies.{study}.pretrain", f"{study_cfg['pretrain']['config']} + pretrain.set")


def check_detector(ctx: Ctx, study: str) -> None:
    cfg = detector_cfg(ctx, study, ctx.study_config(study)["detectors"]["seeds"][0])
    pretrained = cfg.model.get("pretrained")
    if isinstance(pretrained, str) and not Path(pretrained).is_file():
        raise UserError(f"{pretrained}: encoder weights of studies.{study}.detectors (model.pretrained) not found; "
                        "put the timm state dict there or set model.pretrained: false")


def check_generation(ctx: Ctx, study: str) -> None:
    from .stages.generation import generation_options

    g = ctx.study_config(study)["generation"]
    generation_options(g)
    if g["mask_dir"] and not Path(g["mask_dir"]).is_dir():
        raise UserError(f"studies.{study}.generation.mask_dir {g['mask_dir']}: folder not found; fix the path or set "
                        "it to null (the study's own masks)")


def check_maskgen(ctx: Ctx) -> None:
    from maskgen.config import check_config, load_config

    m = ctx.study_config("expansion")["maskgen"]
    check_config(load_config(m["config"], list(m["set"])), f"maskgen config {m['config']}")


def preflight(ctx: Ctx) -> list[str]:
    """Every problem found, one line each (empty: ready to run)."""
    errors: list[str] = []
    _collect(errors, lambda: check_data_root(ctx.data_root))
    for study in enabled_studies(ctx.cfg):
        _collect(errors, lambda: check_generator(ctx, study))
        _collect(errors, lambda: check_detector(ctx, study))
        _collect(errors, lambda: check_generation(ctx, study))
    if "expansion" in enabled_studies(ctx.cfg):
        _collect(errors, lambda: check_maskgen(ctx))
    return errors


def inception_note(ctx: Ctx) -> str:
    from metrics.fid import find_inception_weights

    if not ctx.cfg["fidelity"]["fid"]:
        return "FID/KID: off (fidelity.fid: false)"
    try:
        return f"FID/KID: Inception weights {find_inception_weights(ctx.cfg['fidelity']['inception'])}"
    except UserError as exc:
        return f"FID/KID: will be skipped ({exc})"
