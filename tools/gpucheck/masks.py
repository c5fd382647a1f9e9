"""Synthetic masks for the generation sections, and the per-mask inputs infer.py would build."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tools.gpucheck.common import Context

PREFIXES = ("In", "Pa", "Sc")


def write_masks(folder: Path, count: int, size: int, seed: int = 0) -> Path:
    """``count`` rectangular defect masks named In_1, Pa_1, Sc_1, In_2, ... (written once)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        path = folder / f"{PREFIXES[i % 3]}_{i // 3 + 1}.png"
        if path.is_file():
            continue
        m = np.zeros((size, size), np.uint8)
        y, x = rng.integers(2, size // 2, 2)
        h, w = rng.integers(3, size // 2, 2)
        m[y:y + h, x:x + w] = 255
        Image.fromarray(m).save(path)
    return folder


def mask_folder(ctx: Context, count: int) -> Path:
    """A folder of exactly ``count`` masks at the config's image size."""
    return write_masks(ctx.work / f"masks_{count}", count, int(ctx.config().data.image_size))


def sweep_folder(ctx: Context) -> Path:
    """The masks of the generation sections (enough for the largest batch)."""
    return mask_folder(ctx, max(max(ctx.plan.batches), ctx.plan.reference_masks, 2))


def jobs_for(ctx: Context, pipe, count: int) -> list:
    """infer.py's jobs (category, prompt, seed) for the first ``count`` masks of :func:`sweep_folder`
    (the same masks, so the same starting noise, in every section)."""
    from dataset.categories import categories_from_config
    from inference.jobs import build_jobs

    cats = categories_from_config(pipe.models.config.get("data", {}).get("categories"))
    return build_jobs(sweep_folder(ctx), cats, 1, 0)[:count]


def batch_inputs(pipe, jobs) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """One-hot maps, starting noise (each job's own seed) and prompts, as infer.py makes them."""
    from dataset.sem_dataset import one_hot_sem
    from inference.jobs import job_noise, mask_tensor

    masks = torch.stack([mask_tensor(j.mask_path, pipe.image_size) for j in jobs])
    sem = one_hot_sem(masks, torch.tensor([j.category.index for j in jobs]), pipe.in_dim)
    noise = torch.stack([job_noise(j, pipe.latent_shape(1)[1:]) for j in jobs])
    return sem, noise, [j.prompt for j in jobs]


def reference_inputs(ctx: Context, pipe, count: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    return batch_inputs(pipe, jobs_for(ctx, pipe, count))
