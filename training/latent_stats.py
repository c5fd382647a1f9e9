"""Measure the latent's centre and spread on a training set, for ``autoencoder.params.shift_factor`` /
``scale_factor`` (a centred, unit-variance latent: what the noise schedule assumes).

    python -m training.latent_stats --config configs/sd900_cpu.yaml --data_root ../shared/data/SD-saliency-900 \\
        --split DATA/splits/SD-saliency-900_9-1_seed0_val0.json

Reads exactly the images training would (same dataset, split and resolution), encodes them with the
config's autoencoder at shift 0 and scale 1, and prints the two values to put in the config. Only the
training split is read, so the values carry no information from validation or test pairs.
"""
from __future__ import annotations

import argparse
import math
from typing import Optional, Sequence

import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from ldm.config import instantiate, load_config
from runtime.errors import UserError, run_cli
from training.data import build_dataset


def latent_stats(cfg, data_root: Optional[str], split: Optional[str], progress: bool = True) -> tuple[float, float]:
    """(mean, std) of the unscaled, uncentred latent over the training images ``cfg`` and ``split`` select."""
    node = OmegaConf.to_container(cfg.autoencoder, resolve=True)
    params = node.setdefault("params", {})
    if "shift_factor" not in _param_names(node):
        raise UserError(f"{node['target']} has no shift_factor; latent centring needs an autoencoder that has one")
    params.update({"scale_factor": 1.0, "shift_factor": 0.0})
    autoencoder = instantiate(node).eval()
    dataset = build_dataset(data_root, cfg, split)
    total, total_sq, count = 0.0, 0.0, 0
    with torch.no_grad():
        for i in tqdm(range(len(dataset)), desc="latent stats", disable=not progress):
            z = autoencoder.encode(dataset[i]["image"].unsqueeze(0), sample=False).double()
            total, total_sq, count = total + float(z.sum()), total_sq + float((z * z).sum()), count + z.numel()
    if count == 0:
        raise UserError("the training set is empty; check --data_root and --split")
    mean = total / count
    return mean, math.sqrt(max(total_sq / count - mean * mean, 1e-12))


def _param_names(node: dict) -> list[str]:
    from ldm.config import parameter_names, resolve_target

    return parameter_names(resolve_target(str(node["target"]))) or []


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Measure the latent's mean and spread on a training set and print "
                                            "autoencoder.params.shift_factor / scale_factor for the config.")
    p.add_argument("--config", required=True, help="model/data config (YAML)")
    p.add_argument("--data_root", "--DATA_ROOT", dest="data_root", default=None, help="dataset folder")
    p.add_argument("--split", default=None, help="split JSON: only its 'train' list is read (default: all pairs)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    mean, std = latent_stats(cfg, args.data_root, args.split, progress=not args.no_progress)
    print(f"latent mean {mean:.4f}, std {std:.4f} (unscaled)")
    print(f"autoencoder.params.shift_factor={mean:.4f} autoencoder.params.scale_factor={1.0 / std:.4f}")
    return 0


if __name__ == "__main__":
    run_cli(main)
