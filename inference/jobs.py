"""What to generate: one job per (mask, sample index), each with its own seed."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from dataset.categories import Category, category_for_file
from dataset.files import MASK_EXTS, list_by_stem, sample_stem
from dataset.io import read_mask
from dataset.pairs import load_captions
from runtime.errors import UserError
from runtime.seeds import stem_seed


@dataclass(frozen=True)
class Job:
    mask_path: Path
    name: str          # output file stem, e.g. "In_12" or "In_12_s1"
    category: Category
    prompt: str
    seed: int


@dataclass(frozen=True)
class JobSpec:
    """Which jobs to run: every mask in ``mask_dir``, ``num_per_mask`` samples each."""

    mask_dir: Path
    num_per_mask: int = 1
    seed: int = 0
    prompt: Optional[str] = None  # None: each mask's category prompt
    skip_empty: bool = False

    def __post_init__(self) -> None:
        if self.num_per_mask < 1:
            raise UserError(f"--num_per_mask must be at least 1, got {self.num_per_mask}")

    def settings(self) -> dict:
        """The part of ``generation.json``'s settings these jobs decide."""
        return dict(mask_dir=str(Path(self.mask_dir).resolve()), num_per_mask=self.num_per_mask, seed=self.seed,
                    prompt=self.prompt)


job_seed = stem_seed  # a job's seed: (seed, mask, sample index) alone (runtime.seeds)


def list_masks(mask_dir: Path) -> list[Path]:
    """Mask files in ``mask_dir`` in natural order (the table and rules of :mod:`dataset.files`)."""
    return list(list_by_stem(mask_dir, MASK_EXTS, "mask", strict=True, flag="--mask_dir").values())


def square_mask(path: Path) -> np.ndarray:
    """The mask's centred square (as the training loader crops), bool H x H."""
    mask = read_mask(path)
    h, w = mask.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return mask[top:top + side, left:left + side]


def build_jobs(mask_dir: Path, categories: Sequence[Category], num_per_mask: int, seed: int,
               prompt: Optional[str] = None, skip_empty: bool = False) -> list[Job]:
    """Jobs for every mask: category from ``caption.json`` (next to or above the masks) or the
    filename prefix, prompt = category prompt unless ``prompt`` forces one."""
    if num_per_mask < 1:
        raise UserError("--num_per_mask must be at least 1")
    captions = {}
    for candidate in (mask_dir / "caption.json", mask_dir.parent / "caption.json"):
        if candidate.is_file():
            captions = load_captions(candidate)
            break
    jobs, empty, cut = [], [], []
    for path in list_masks(mask_dir):
        mask = read_mask(path)
        if not mask.any():
            empty.append(path.name)
            continue
        if not square_mask(path).any():  # the defect lies outside the centred square the model sees
            cut.append(path.name)
            continue
        category = category_for_file(path.name, categories, captions or None)
        for k in range(num_per_mask):
            jobs.append(Job(path, sample_stem(path.stem, k, num_per_mask), category, prompt or category.prompt,
                            job_seed(seed, path.stem, k)))
    if cut:
        raise UserError(f"{len(cut)} non-square mask(s) in {mask_dir} have no defect inside their centred square, "
                        f"which is what is generated ({', '.join(cut[:5])}); crop them to a square around the "
                        "defect")
    if empty and not skip_empty:
        raise UserError(f"{len(empty)} mask(s) in {mask_dir} have no foreground ({', '.join(empty[:5])}); "
                        "remove them or pass --skip_empty_masks")
    if empty:
        warnings.warn(f"skipping {len(empty)} mask(s) with no foreground: {', '.join(empty[:5])}")
    if not jobs:
        raise UserError(f"no usable masks in {mask_dir}")
    return jobs


def shard(jobs: Sequence[Job], rank: int, world: int) -> list[Job]:
    """This rank's jobs: round-robin, so every job lands on exactly one rank."""
    return list(jobs[rank::world])


def seed_noise(seed: int, shape: Sequence[int], offset: float = 0.0) -> torch.Tensor:
    """The starting noise for ``seed`` (CPU generator, identical on every device); with ``offset`` (a model
    trained with offset noise) plus ``offset`` times one normal constant per channel, drawn after it."""
    g = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(tuple(shape), generator=g)
    if offset:
        noise = noise + offset * torch.randn((shape[0], *([1] * (len(shape) - 1))), generator=g)
    return noise


def job_noise(job: Job, shape: Sequence[int]) -> torch.Tensor:
    """The starting noise of a job."""
    return seed_noise(job.seed, shape)


def mask_tensor(path: Path, size: int) -> torch.Tensor:
    """Binary mask as a (size x size) bool tensor: centred square (as in training), nearest resize."""
    from PIL import Image

    mask = square_mask(path)
    img = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)
    return torch.from_numpy(np.asarray(img) > 127)
