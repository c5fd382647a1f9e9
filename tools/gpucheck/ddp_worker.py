"""One torchrun rank of gpu_check's DDP step: ``Trainer.train()`` wrapped in DistributedDataParallel.

    torchrun --standalone --nproc_per_node=1 -m tools.gpucheck.ddp_worker --out R.json --runs DIR --device cuda

``runtime.distributed`` starts a process group only for WORLD_SIZE > 1 (a world of one trains
without DDP). On a one-GPU machine this worker starts the group itself (NCCL on CUDA, gloo on
CPU) and hands the trainer a rank record that reports itself distributed, so the world-size-1 run
(with gradient checkpointing, as the full config trains) goes through the DDP wrapper and every
collective the trainer uses (all-reduce of the loss, barriers, the RNG-state gather of a save)
exactly as a multi-GPU run does.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="JSON result file (rank 0)")
    p.add_argument("--runs", type=Path, required=True, help="work folder (config, run folder)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--tiny", action="store_true")
    args = p.parse_args()

    from runtime import distributed as D
    from runtime.atomic import write_text_atomic
    from tools.gpucheck.common import PLANS, Context, random_weight_trainer
    from tools.gpucheck.train_checks import StepProbe, make_trainer, no_checkpoint_writes

    @dataclass
    class ForcedDistInfo(D.DistInfo):
        @property
        def distributed(self) -> bool:  # a world of one, through the multi-process code paths
            return True

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if args.device.startswith("cuda") else torch.device("cpu")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, **({"device_id": device} if backend == "nccl" else {}))
    info = ForcedDistInfo(dist.get_rank(), local_rank, dist.get_world_size(), device, backend)
    try:
        mode = "tiny" if args.tiny else "quick"
        ctx = Context(device, mode, args.out.parent, args.runs, PLANS[mode])
        with random_weight_trainer(device) as trainer_module:
            tr = make_trainer(ctx, trainer_module, "ddp", info=info, precision=args.precision,
                              total_iters=args.iters, gradient_checkpointing="true")
            no_checkpoint_writes(tr)
            probe = StepProbe(tr, device)
            start = time.perf_counter()
            tr.train()
            tr._save()  # the save's collectives (RNG-state gather, barriers); nothing is written
            total = time.perf_counter() - start
        wrapped = type(tr.denoiser).__name__
        gathered = D.gather_objects(info, {"rank": info.rank})
        result = {"backend": backend, "world_size": info.world_size, "wrapper": wrapped,
                  "losses": probe.losses, "iterations": tr.iteration, "seconds": round(total, 3),
                  "s_per_it_last": round(probe.marks[-1] - probe.marks[-2], 4) if len(probe.marks) > 1 else None,
                  "gathered": gathered,
                  "peak_gib": (round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
                               if device.type == "cuda" else None)}
        if info.rank == 0:
            write_text_atomic(json.dumps(result), args.out)
    finally:
        D.cleanup(info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
