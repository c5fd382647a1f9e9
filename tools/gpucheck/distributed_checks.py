"""Section 3: one DDP training step under torchrun (NCCL on CUDA, gloo on CPU) and the sharded
``infer.py`` path under torchrun, each in its own processes, as users start them."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any

from tools.gpucheck.common import REPO, Context
from tools.gpucheck.masks import mask_folder


def torchrun(ctx: Context, args: list[str], log_name: str, timeout: int) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node=1 ARGS`` from the repository
    root (a free rendezvous port); its output goes to ``OUT/logs/log_name.log``."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if ctx.tiny:
        env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", *args]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)
    logs = ctx.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / f"{log_name}.log").write_text(f"$ {' '.join(cmd)}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


def failure_line(proc: subprocess.CompletedProcess) -> str:
    """The child's ``error: ...`` line or the first exception line of its traceback (not torchrun's
    own ChildFailedError), else its last non-empty stderr line."""
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    errors += [line for line in lines
               if re.match(r"^[\w.]*(Error|Exception)\b.*:", line) and "ChildFailedError" not in line]
    return (errors or lines[-1:] or [f"exit status {proc.returncode}"])[0][:300]


def section_ddp(ctx: Context, log) -> dict[str, Any]:
    """Section 3a: ``Trainer.train()`` inside DDP in a torchrun world of one."""
    result_file = ctx.work / "ddp_result.json"
    result_file.unlink(missing_ok=True)
    precision = "bf16" if ctx.cuda else "fp32"  # CPU: the code path, without slow emulated bf16
    iters = ctx.plan.warmup + (1 if ctx.tiny else 2)
    args = ["--module", "tools.gpucheck.ddp_worker", "--out", str(result_file), "--runs", str(ctx.work / "ddp"),
            "--device", str(ctx.device), "--precision", precision, "--iters", str(iters)]
    args += ["--tiny"] if ctx.tiny else []
    start = time.perf_counter()
    proc = torchrun(ctx, args, "ddp", timeout=900)
    seconds = round(time.perf_counter() - start, 1)
    if proc.returncode != 0 or not result_file.is_file():
        raise RuntimeError(f"torchrun DDP step failed ({failure_line(proc)}); full log in logs/ddp.log")
    res = json.loads(result_file.read_text())
    finite = bool(res["losses"]) and all(math.isfinite(v) for v in res["losses"])
    res.update(precision=precision, wall_s_incl_start=seconds, losses_finite=finite,
               ok=bool(finite and res["wrapper"] == "DistributedDataParallel" and res["iterations"] == iters
                       and res["backend"] == ("nccl" if ctx.cuda else "gloo")))
    log(f"  {res['backend']} DDP world {res['world_size']}: {res['iterations']} iterations, wrapper {res['wrapper']}, "
        "losses " + ", ".join(f"{v:.4f}" for v in res["losses"]))
    return res


def section_infer_sharded(ctx: Context, log) -> dict[str, Any]:
    """Section 3b: ``torchrun infer.py`` (one rank) writes the paired dataset and its records."""
    from dataset.files import IMAGES_DIR, MASKS_DIR
    from inference.writer import RECORD

    n = 2 if ctx.tiny else 4
    masks = mask_folder(ctx, n)
    folder = ctx.work / "infer_sharded"
    shutil.rmtree(folder, ignore_errors=True)
    precision = "fp32" if ctx.tiny else "bf16"
    steps = 5 if ctx.tiny else 20
    args = ["infer.py", "--ckpt", str(ctx.checkpoint()), "--mask_dir", str(masks), "--folder", str(folder),
            "--save_folder_name", "samples", "--device", str(ctx.device), "--batch_size", "2",
            "--sampler", "unipc", "--steps", str(steps), "--precision", precision]
    start = time.perf_counter()
    proc = torchrun(ctx, args, "infer_sharded", timeout=900)
    seconds = round(time.perf_counter() - start, 1)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun infer.py failed ({failure_line(proc)}); full log in logs/infer_sharded.log")
    root = folder / "samples"
    images = sorted(p.name for p in (root / IMAGES_DIR).glob("*.png"))
    pairs = sorted(p.name for p in (root / MASKS_DIR).glob("*.png"))
    record = json.loads((root / RECORD).read_text()) if (root / RECORD).is_file() else {}
    res = {"masks": n, "images": len(images), "masks_written": len(pairs), "records": len(record.get("images", {})),
           "sampler": f"unipc {steps}", "precision": precision, "wall_s_incl_start_and_load": seconds,
           "rank_files_left": len(list(root.glob("generation.rank*.json")))}
    res["ok"] = bool(res["images"] == n and images == pairs and res["records"] == n and res["rank_files_left"] == 0)
    log(f"  torchrun infer.py: {res['images']}/{n} images, {res['records']} records, {seconds} s")
    return res
