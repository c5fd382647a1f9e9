#!/usr/bin/env python
"""Check every CUDA path of DefFiller in one process, on random weights of the full config, and
write a report: OUT/report.md (tables) and OUT/results.json (every figure).

    python -m tools.gpu_check --quick --out gpu_check        # one GPU, sized for under 8 minutes
    python -m tools.gpu_check --out gpu_check                # longer timings, same checks
    python -m tools.gpu_check --device cpu --tiny --out dry  # CPU dry run of the tiny config (the test suite's)

Sections (each independent: one that fails is recorded with its one-line error and a traceback
file under OUT/tracebacks/, and the others still run; exit status 1 if any failed):

  1  train          training steps through Trainer.train(), batch 2 at 256 px: fp32, fp16 autocast
                    with the gradient scaler, bf16 autocast, each with and without gradient
                    checkpointing; s/it (median after warm-up), peak GPU memory, finite loss and
                    gradient norms, the trainable set unchanged, trained weights moved, frozen not
  2  resume         N steps in one go vs N-1 steps + checkpoint on disk + a new Trainer resuming
                    (fp16 + scaler + EMA on CUDA, bf16 on CPU): the same next step
  3a ddp            torchrun, world size 1, Trainer.train() inside DistributedDataParallel (NCCL on
                    CUDA, gloo on CPU) with the trainer's collectives
  3b infer_sharded  torchrun infer.py with one rank: the paired dataset and its records
  4  generation     batch sweep (masks per batch) x PLMS 50 / UniPC 20 x fp32/fp16/bf16 through the
                    generation library path: images/s and peak memory, against the original's way
                    (checkpoint reload per mask, batch 1, two forwards per step, PLMS 50, fp32)
                    measured in the same run; ODE error of each against a third-order dense
                    reference solve (samplers.sample_reference) from the same noise
  5  eps            guided eps under fp16/bf16 autocast vs fp32 on the same inputs (max relative error)

Weights are random (the zero-initialised output layers and gates get small random values); nothing
is downloaded or read besides the repository. Generation reads a random checkpoint that the run
writes into a scratch folder (--work; deleted at the end unless --keep_work). The ODE errors are
those of a random network and compare samplers with each other, not image quality. --tiny uses a
50-step noise schedule with PLMS 10 / UniPC 5 so that its reference solve takes seconds. The
report is rewritten after every section, so a run cut short keeps what it measured; rerun single
sections with --only.
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[1]

from runtime.errors import UserError, run_cli  # noqa: E402

SECTIONS: list[tuple[str, str, str]] = [  # key, number, title
    ("train", "1", "1. Training steps (batch 2): precision x gradient checkpointing"),
    ("resume", "2", "2. Save -> load -> resume gives the same next step"),
    ("ddp", "3a", "3a. DDP training step under torchrun (world size 1)"),
    ("infer_sharded", "3b", "3b. Sharded infer.py under torchrun (1 rank)"),
    ("generation", "4", "4. Generation: batch sweep vs the original's way, ODE error"),
    ("eps", "5", "5. eps agreement: fp16 / bf16 autocast vs fp32"),
]


def section_functions() -> dict[str, Callable]:
    from tools.gpucheck.distributed_checks import section_ddp, section_infer_sharded
    from tools.gpucheck.generation import section_generation
    from tools.gpucheck.precision import section_eps
    from tools.gpucheck.train_checks import section_resume, section_train

    return {"train": section_train, "resume": section_resume, "ddp": section_ddp,
            "infer_sharded": section_infer_sharded, "generation": section_generation, "eps": section_eps}


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("gpu_check"),
                   help="report folder: report.md, results.json, logs/, tracebacks/ (default: %(default)s)")
    p.add_argument("--device", default=None,
                   help="cuda, cuda:N or cpu (default: cuda; a CPU run needs --device cpu)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="3 timed iterations instead of 10, one timed run per batch size instead of 2, 2 "
                           "reference masks instead of 4, 1 mask the original's way instead of 2 (sized "
                           "for under 8 min on one H200)")
    size.add_argument("--tiny", action="store_true",
                      help="the tiny test config (tests/assets/tiny.yaml) instead of the full one: a dry run "
                           "of every code path in seconds on a CPU (use with --device cpu)")
    p.add_argument("--only", nargs="+", metavar="SECTION", default=None,
                   help="run only these sections, by number or name: " +
                        ", ".join(f"{n} ({k})" for k, n, _ in SECTIONS) + " (default: all)")
    p.add_argument("--work", type=Path, default=None,
                   help="scratch folder for the random checkpoint (about 5 GB for the full config), run folders "
                        "and generated images (default: a new temporary folder, removed at the end)")
    p.add_argument("--keep_work", action="store_true", help="keep the scratch folder (its path is printed)")
    return p.parse_args(argv)


def pick_sections(only: Optional[list[str]]) -> list[str]:
    if not only:
        return [k for k, _, _ in SECTIONS]
    by_name = {k: k for k, _, _ in SECTIONS} | {n: k for k, n, _ in SECTIONS} | {"3": "3"}
    picked: list[str] = []
    for item in only:
        if item not in by_name:
            raise UserError(f"--only {item}: unknown section; choose from "
                            + ", ".join(f"{n}/{k}" for k, n, _ in SECTIONS))
        keys = ["ddp", "infer_sharded"] if item == "3" else [by_name[item]]
        picked += [k for k in keys if k not in picked]
    return [k for k, _, _ in SECTIONS if k in picked]


def resolve_device(choice: Optional[str]):
    import torch

    choice = choice or "cuda"
    try:
        device = torch.device(choice)
    except RuntimeError:
        raise UserError(f"--device {choice!r}: use cuda, cuda:N or cpu") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {choice}: no CUDA GPU is visible to torch here; for a CPU dry run "
                            "pass --device cpu --tiny")
        device = torch.device("cuda", device.index or 0)
        if device.index >= torch.cuda.device_count():
            raise UserError(f"--device {choice}: only {torch.cuda.device_count()} CUDA GPU(s) here")
    elif device.type != "cpu":
        raise UserError(f"--device {choice!r}: use cuda, cuda:N or cpu")
    return device


def meta_info(device, mode: str) -> dict:
    import torch

    info = {"mode": mode, "device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(),
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32,
                    gpu_memory_gib=round(torch.cuda.get_device_properties(device).total_memory / 2 ** 30, 1))
    else:
        info.update(cpu_threads=torch.get_num_threads())
    return info


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if importlib.util.find_spec("trainer") is None:
        raise UserError("trainer.py is not importable: run this from the repository root as "
                        "`python -m tools.gpu_check ...`")
    keys = pick_sections(args.only)
    device = resolve_device(args.device)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"

    import torch

    from tools.gpucheck.common import PLANS, Context, free_memory, one_line
    from tools.gpucheck.report import write_report

    if device.type == "cuda":
        torch.cuda.set_device(device)
    if args.tiny:
        torch.set_num_threads(1)  # tiny tensors: more threads only wait for each other
    out = args.out.resolve()
    work = (args.work or Path(tempfile.mkdtemp(prefix="gpu_check_"))).resolve()
    ctx = Context(device, mode, out, work, PLANS[mode])
    titles = {k: t for k, _, t in SECTIONS}
    numbers = {k: n for k, n, _ in SECTIONS}
    functions = section_functions()
    meta = meta_info(device, mode)
    results: dict[str, dict] = {}
    started = time.perf_counter()
    print(f"gpu_check: {mode} run on {meta.get('gpu', device)}; sections {', '.join(numbers[k] for k in keys)}; "
          f"report in {out}", flush=True)
    for i, key in enumerate(keys, 1):
        print(f"[{i}/{len(keys)}] {titles[key]}", flush=True)
        t0 = time.perf_counter()
        try:
            figures = functions[key](ctx, lambda line: print(line, flush=True))
            status = "pass" if figures.get("ok") else "fail"
            results[key] = {"status": status, "figures": figures}
            if status == "fail":
                results[key]["error"] = "a check did not hold (see the figures: ok=False)"
        except (Exception, SystemExit) as exc:  # a section's failure is recorded; the next section still runs
            tb_dir = out / "tracebacks"
            tb_dir.mkdir(parents=True, exist_ok=True)
            tb_file = tb_dir / f"{key}.txt"
            tb_file.write_text(traceback.format_exc())
            results[key] = {"status": "fail", "error": one_line(exc), "traceback": str(tb_file.relative_to(out))}
        finally:
            free_memory()
        results[key]["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"    -> {results[key]['status'].upper()} in {results[key]['seconds']:.1f} s"
              + (f": {results[key]['error']}" if results[key].get("error") else ""), flush=True)
        meta["total_s"] = round(time.perf_counter() - started, 1)
        write_report(out, meta, titles, results)  # after every section: a killed run keeps what it measured
    if args.keep_work:
        print(f"gpu_check: scratch files kept in {work}", flush=True)
    else:
        shutil.rmtree(work, ignore_errors=True)
    failed = [k for k, r in results.items() if r["status"] != "pass"]
    print(f"gpu_check: {len(keys) - len(failed)}/{len(keys)} sections passed in {meta['total_s']:.0f} s; "
          f"{out / 'report.md'}" + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    run_cli(main)
