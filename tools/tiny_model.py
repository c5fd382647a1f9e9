"""A tiny random-weight DefFiller checkpoint for tests (no downloads, seconds on a CPU)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ldm.build import build_models
from ldm.checkpoint import model_sections, save_checkpoint
from ldm.config import load_config

TINY = Path(__file__).resolve().parents[1] / "tests" / "assets" / "tiny.yaml"


def make_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """Fresh init perturbed everywhere (so outputs depend on every input) with open gates."""
    torch.manual_seed(seed)
    cfg = load_config(TINY)
    models = build_models(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for part in models.parts().values():
            for name, p in part.named_parameters():
                if "alpha" in name:
                    p.fill_(0.5)
                elif p.is_floating_point():
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
    return save_checkpoint(path, model_sections(models), cfg)


def write_masks(folder: Path, names: list[str], size: int = 32, seed: int = 0) -> list[Path]:
    """Random rectangular defect masks named with category prefixes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for name in names:
        m = np.zeros((size, size), np.uint8)
        y, x = rng.integers(2, size // 2, 2)
        h, w = rng.integers(3, size // 2, 2)
        m[y:y + h, x:x + w] = 255
        path = folder / f"{name}.png"
        Image.fromarray(m).save(path)
        paths.append(path)
    return paths
