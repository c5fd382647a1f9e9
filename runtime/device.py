"""One device choice for every command: ``--device auto | cpu | cuda | cuda:N | mps``."""
from __future__ import annotations

import os
from typing import Optional

import torch

from runtime.errors import UserError

CHOICES = "auto, cpu, cuda, cuda:N or mps"


def pick_device(arg: Optional[str] = "auto", local_rank: int = 0) -> torch.device:
    """The device ``arg`` names; ``auto`` (or ``None``) is CUDA when available, else CPU.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) ``auto``/``cuda`` take GPU ``local_rank``; a single process
    honours ``cuda:N``. Unknown names and devices this machine lacks are a one-line error.
    """
    choice = str(arg or "auto").strip().lower()
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise UserError("--device mps: MPS is not available here; use --device cpu")
        return torch.device("mps")
    kind, _, index = choice.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise UserError(f"--device {arg!r}: unknown device; choose {CHOICES}")
    if not torch.cuda.is_available():
        raise UserError(f"--device {arg}: CUDA is not available here (no GPU or a CPU-only PyTorch); "
                        "use --device cpu")
    if index and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        n = int(index)
    else:
        n = int(local_rank)
    if n >= torch.cuda.device_count():
        raise UserError(f"--device {arg}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                        f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    return torch.device("cuda", n)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); without either, torch emulates it."""
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(check() for check in checks if check is not None)
