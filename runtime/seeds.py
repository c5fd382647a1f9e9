"""Independent random streams from tuples of integers: one scheme for every command."""
from __future__ import annotations

import numpy as np
import torch


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (NumPy's SeedSequence: different tuples give independent streams)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def generator(*values: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator seeded with :func:`mix_seed` of ``values``."""
    return torch.Generator(device=device).manual_seed(mix_seed(*values))
