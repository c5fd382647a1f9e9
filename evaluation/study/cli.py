"""``python -m evaluation.study``: the command line over :mod:`evaluation.study.pipeline`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from runtime.cli import add_device, add_threads, positive_int
from runtime.errors import UserError, run_cli
from runtime.lock import locked
from runtime.options import add_set_argument
from runtime.parallel import sigterm_as_ctrl_c

from .config import load_study_config
from .context import Ctx, seconds_text
from .pipeline import format_plan, plan, resolve_names, run_stages, select_until
from .preflight import inception_note, preflight
from .stages import StageStopped, build_stages
from .stamps import StampStore

EPILOG = """examples:
  python -m evaluation.study --config configs/study/sd900_cpu.yaml --plan
  python -m evaluation.study --config configs/study/sd900_cpu.yaml
  python -m evaluation.study --config configs/study/sd900_quick.yaml --set data_root=/data/SD-saliency-900
  python -m evaluation.study --config configs/study/sd900_cpu.yaml --until generator
  python -m evaluation.study --config configs/study/sd900_cpu.yaml --force expansion.filter

Stages (per study, then the report): split, [pretrain], generator, maskgen (expansion), baseline,
generation, filter (expansion), detectors, fidelity, report. A stage runs when it has no stamp, its inputs
changed, or an upstream stage rebuilt; rerunning after an interruption resumes at the stage that
stopped (and inside it where the command resumes: main.py, maskgen.train, detector runs, generation).
Ctrl-C or SIGTERM stops it; worker processes get a minute to save.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.study", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The real-data study: DefFiller's data-substitution (Table 5, 9:1) and data-expansion "
                    "(Table 8, 1:5) studies as one staged, resumable pipeline with a report.")
    p.add_argument("--config", required=True, help="study YAML, e.g. configs/study/sd900_cpu.yaml")
    add_set_argument(p, "data_root=PATH studies.expansion.enabled=false")
    p.add_argument("--plan", action="store_true",
                   help="print every stage as up to date or to run (and why), check configs and weights, and exit")
    p.add_argument("--until", default=None, metavar="STAGE",
                   help="stop after STAGE: a stage (substitution.generator) or a kind (generator: every study's)")
    p.add_argument("--force", nargs="*", default=[], metavar="STAGE",
                   help="rebuild these stages (and what depends on them); a forced training stage restarts "
                        "from scratch, its old run folder moved aside")
    add_device(p, None, "the config's, auto")
    add_threads(p, None, "the config's", note=", for every stage (per process with --jobs)")
    p.add_argument("--jobs", type=positive_int, default=None,
                   help="detector runs and generation seeds at a time, each in a process of its own; with "
                        "--threads 0 the cores are shared out between them (default: the config's, 1)")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    return p


def _log(message: str) -> None:
    print(message, flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = list(args.set)
    if args.device is not None:
        overrides.append(f"device={args.device}")
    if args.threads is not None:
        overrides.append(f"threads={args.threads}")
    if args.jobs is not None:
        overrides.append(f"jobs={args.jobs}")
    cfg = load_study_config(args.config, overrides)
    ctx = Ctx(cfg, StampStore(cfg["out"]), _log, progress=not args.no_progress)
    stages = build_stages(cfg)
    forced = set(resolve_names(args.force, stages, "--force"))
    ctx.forced = forced
    selected = select_until(stages, args.until)
    errors = preflight(ctx)
    if args.plan:
        print(f"study {cfg['name']} ({Path(args.config)}) -> {cfg['out']}"
              + (f"\nprofile: {cfg['profile']}" if cfg.get("profile") else ""))
        print(f"data_root: {cfg['data_root']}")
        print(format_plan(plan(selected, ctx, forced)))
        print(inception_note(ctx))
    if errors:
        raise UserError("\nerror: ".join(errors))
    if args.plan:
        return 0
    _log(f"study {cfg['name']} -> {cfg['out']}")
    try:
        with locked(cfg["out"], "choose another out (--set out=PATH)"), sigterm_as_ctrl_c():  # one study per folder
            ran = run_stages(selected, ctx, forced)
    except StageStopped as exc:
        print(str(exc), file=sys.stderr)
        return exc.code
    times = ctx.store.times()
    total = sum(times.get(k, {}).get("seconds", 0.0) for k in ran)
    _log(f"study {cfg['name']}: {len(ran)} stage(s) ran ({seconds_text(total)})"
         + (f"; report: {Path(cfg['out']) / 'report' / 'report.md'}" if any(s.kind == "report" for s in selected)
            else f"; stopped after {args.until} (--until)"))
    return 0


def entry_point() -> None:
    """The ``deffiller-study`` script (``python -m evaluation.study``): :func:`main` with one-line errors and exit
    codes."""
    run_cli(main)
