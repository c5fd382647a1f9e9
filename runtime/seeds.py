"""Independent random streams from tuples of integers: one module for every command's seeds.

Streams are ``mix_seed(seed, STREAM, ...)`` with a named stream id; two older derivations keep their own
formulas so that existing runs, datasets and generated sets reproduce: :func:`stem_seed` (a generated
sample's seed from its mask's name) and :func:`procedural_seed` (a procedural pair's seed).
"""
from __future__ import annotations

import hashlib
from enum import IntEnum

import numpy as np
import torch


class Stream(IntEnum):
    """The training run's streams: ``mix_seed(run seed, Stream.X, ...)``."""

    EPOCH_ORDER = 1   # the sample order of an epoch (+ epoch)
    SAMPLE = 2        # one sample's augmentation and caption draw (+ position in the stream)
    GRID_SAMPLE = 3   # a sample of the fixed sample-grid batch (+ dataset index)
    STEP = 4          # one iteration's timesteps, noise, null grounding, latents (+ iteration, rank)
    GRID_NOISE = 5    # the sample grids' start noise
    GLOBALS = 6       # each rank's global RNGs (dropout) (+ rank)


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (NumPy's SeedSequence: different tuples give independent streams)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def stem_seed(base_seed: int, stem: str, k: int) -> int:
    """A 63-bit seed that depends only on (seed, name, index): a generated sample's seed from its mask's name,
    the same whatever the batch size, order or number of ranks."""
    digest = hashlib.sha256(f"{base_seed}:{stem}:{k}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def procedural_seed(seed: int, category_index: int, number: int) -> int:
    """A 32-bit seed of procedural sample ``number`` (1-based) of a category, shared by the writer and the
    dataset."""
    return int(np.random.SeedSequence([int(seed), int(category_index), int(number)]).generate_state(1)[0])


def generator(*values: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator seeded with :func:`mix_seed` of ``values``."""
    return torch.Generator(device=device).manual_seed(mix_seed(*values))
