"""Configuration of the mask DDPM: :data:`SCHEMA` (the one set of defaults: the paper's settings), a
YAML file on top, ``--set key=value`` overrides last (strict: see :mod:`runtime.options`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from runtime import options as O
from runtime.errors import UserError

SCHEMA: dict[str, Any] = {
    # null: the three SD-Saliency-900 categories; otherwise a list of {name, prefix, index, prompt}
    "categories": O.Open(None),
    "data": {"image_size": 64, "binarize": None, "hflip": True, "vflip": True},
    "model": {"patch_size": 1, "base_channels": 64, "channel_mult": [1, 2, 2, 4], "num_res_blocks": 2,
              "attention_levels": [2, 3], "num_heads": 4, "dropout": 0.1, "groups": 8},
    "diffusion": {"timesteps": 1000, "beta_schedule": "cosine", "linear_start": 1e-4, "linear_end": 0.02,
                  "parameterization": "v"},
    "train": {"epochs": 200, "batch_size": 32, "lr": 1e-4, "weight_decay": 0.0, "warmup_steps": 200,
              "grad_clip": 1.0, "ema_decay": 0.999, "p_uncond": 0.1, "min_snr_gamma": None, "seed": 0,
              "ckpt_every_epochs": 5, "num_workers": 0},
    "sample": {"sampler": "ddim", "steps": 50, "eta": 0.0, "guidance": 1.0, "clip_x0": True,
               "threshold": 0.5, "low_threshold": None, "upsample": "bilinear", "min_area": 0.0005, "size": 256,
               "batch_size": 64, "max_retries": 20},
}
DEFAULTS: dict[str, Any] = O.defaults(SCHEMA)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Defaults, then the YAML at ``path`` (none: the defaults alone), then ``key.sub=value``
    overrides. Unknown keys and unreadable files raise :class:`UserError`."""
    return O.layered(SCHEMA, path, overrides)


def checked(stored: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A config read back from a checkpoint: checked against the schema, missing keys defaulted."""
    return O.merge(O.defaults(SCHEMA), O.check(dict(stored), SCHEMA, where), SCHEMA)


def check_config(cfg: Mapping[str, Any], where: str = "config") -> None:
    """Sanity checks that give a one-line error instead of a crash deep in training."""
    size = cfg["data"]["image_size"]
    model = cfg["model"]
    factor = int(model["patch_size"]) * 2 ** (len(model["channel_mult"]) - 1)
    if not isinstance(size, int) or not 8 <= size <= 1024 or size % factor:
        raise UserError(f"{where}: data.image_size {size!r} must be an integer from 8 to 1024 "
                        f"divisible by patch_size * 2**(levels-1) = {factor}")
    if model["base_channels"] % model["groups"]:
        raise UserError(f"{where}: model.base_channels {model['base_channels']} must be divisible by "
                        f"model.groups {model['groups']}")
    if cfg["diffusion"]["beta_schedule"] not in ("linear", "cosine"):
        raise UserError(f"{where}: diffusion.beta_schedule must be 'linear' or 'cosine', got "
                        f"{cfg['diffusion']['beta_schedule']!r}")
    if cfg["diffusion"]["parameterization"] not in ("eps", "v", "x0"):
        raise UserError(f"{where}: diffusion.parameterization must be 'eps', 'v' or 'x0', got "
                        f"{cfg['diffusion']['parameterization']!r}")
    binarize = cfg["data"]["binarize"]
    if binarize is not None and not (isinstance(binarize, (int, float)) and 0 < binarize < 1):
        raise UserError(f"{where}: data.binarize must be null or a threshold in (0, 1), got {binarize!r}")
    train = cfg["train"]
    for key in ("epochs", "batch_size", "ckpt_every_epochs"):
        if not isinstance(train[key], int) or train[key] < 1:
            raise UserError(f"{where}: train.{key} must be a positive integer, got {train[key]!r}")
    for key in ("warmup_steps", "num_workers"):
        if not isinstance(train[key], int) or train[key] < 0:
            raise UserError(f"{where}: train.{key} must be an integer >= 0, got {train[key]!r}")
    O.finite(train["lr"], f"{where}: train.lr", 0.0, low_inclusive=False)
    O.finite(train["weight_decay"], f"{where}: train.weight_decay", 0.0)
    O.finite(train["grad_clip"], f"{where}: train.grad_clip", 0.0)
    if train["min_snr_gamma"] is not None:
        O.finite(train["min_snr_gamma"], f"{where}: train.min_snr_gamma", 0.0, low_inclusive=False)
    if not 0.0 <= O.finite(train["ema_decay"], f"{where}: train.ema_decay") < 1.0:
        raise UserError(f"{where}: train.ema_decay must be in [0, 1), got {train['ema_decay']!r}")
    if not 0.0 <= O.finite(train["p_uncond"], f"{where}: train.p_uncond") < 1.0:
        raise UserError(f"{where}: train.p_uncond must be in [0, 1), got {train['p_uncond']!r}")

