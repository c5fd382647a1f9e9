"""Validation pairs carved from a detector's training pairs, and the scores a schedule is chosen on.

The carve is :func:`dataset.splits.carve_validation` (stratified by category, seeded); the model trains on
the rest. Scores are the protocols' metrics (S, MAE, E-max, F-max) at each mask's own size, as
``evaluation.sod_eval`` computes them on predicted maps.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dataset.io import read_mask
from dataset.splits import carve_validation
from metrics.sod import SODMetrics
from runtime.errors import UserError

from .data import load_image_array, to_tensor

#: the scores recorded per validation; the first one selects the best epoch (higher is better)
VAL_METRICS = ("S", "MAE", "E_max", "F_max")


def carve_pairs(pairs: Sequence, fraction: float, seed: int) -> tuple[list, list]:
    """``(train, validation)`` pairs: ``fraction`` of ``pairs`` per category held out, chosen by ``seed``."""
    by_stem = {p.stem: p for p in pairs}
    if len(by_stem) != len(pairs):
        raise UserError("training pairs with repeated names cannot be carved into a validation split; "
                        "rename them or set train.val_fraction to 0")
    carved = carve_validation({"train": list(by_stem), "test": []}, float(fraction), int(seed))
    train, val = [by_stem[s] for s in carved["train"]], [by_stem[s] for s in carved["test"]]
    if not val or not train:
        raise UserError(f"train.val_fraction {fraction} of {len(pairs)} training pairs leaves "
                        f"{len(train)} to train on and {len(val)} to validate on; both need at least one")
    return train, val


class ValidationSet:
    """Validation images at the network size and their masks at full size, loaded once."""

    def __init__(self, pairs: Sequence, size: int, in_chans: int = 3):
        self.stems = [p.stem for p in pairs]
        self.images = torch.stack([to_tensor(load_image_array(p.image, size, in_chans)) for p in pairs])
        self.masks = [np.asarray(read_mask(p.mask), bool) for p in pairs]

    def __len__(self) -> int:
        return len(self.masks)

    @torch.no_grad()
    def score(self, model: torch.nn.Module, device: torch.device | str = "cpu",
              batch_size: int = 32) -> dict[str, float]:
        """:data:`VAL_METRICS` of ``model``'s maps (resized to each mask's size); the model's mode is kept."""
        was_training = model.training
        model.eval()
        metrics = SODMetrics()
        try:
            for i in range(0, len(self), batch_size):
                prob = torch.sigmoid(model(self.images[i:i + batch_size].to(device))).cpu()
                for pr, gt in zip(prob, self.masks[i:i + batch_size]):
                    full = F.interpolate(pr[None], size=gt.shape, mode="bilinear", align_corners=False)[0, 0]
                    metrics.step(full.numpy(), gt)
        finally:
            model.train(was_training)
        results = metrics.results()
        return {k: results[k] for k in VAL_METRICS}
