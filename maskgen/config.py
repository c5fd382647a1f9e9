"""Configuration of the mask DDPM: built-in defaults, a YAML file on top, command-line overrides last."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping, Sequence

from ldm.errors import UserError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "maskgen.yaml"

DEFAULTS: dict[str, Any] = {
    "categories": None,
    "data": {"image_size": 64, "binarize": None, "hflip": True, "vflip": True},
    "model": {"patch_size": 1, "base_channels": 64, "channel_mult": [1, 2, 2, 4], "num_res_blocks": 2,
              "attention_levels": [2, 3], "num_heads": 4, "dropout": 0.1, "groups": 8},
    "diffusion": {"timesteps": 1000, "beta_schedule": "cosine", "linear_start": 1e-4, "linear_end": 0.02,
                  "parameterization": "v"},
    "train": {"epochs": 200, "batch_size": 32, "lr": 1e-4, "weight_decay": 0.0, "warmup_steps": 200,
              "grad_clip": 1.0, "ema_decay": 0.999, "p_uncond": 0.1, "min_snr_gamma": None, "seed": 0,
              "ckpt_every_epochs": 5, "num_workers": 0},
    "sample": {"sampler": "ddim", "steps": 50, "eta": 0.0, "guidance": 1.0, "clip_x0": True,
               "threshold": 0.5, "min_area": 0.0005, "size": 256, "batch_size": 64, "max_retries": 20},
}

# sections whose keys are free-form (validated elsewhere) rather than checked against DEFAULTS
_OPEN_SECTIONS = ("categories",)


def _merge(base: dict[str, Any], update: Mapping[str, Any], where: str, path: str = "") -> None:
    for key, value in update.items():
        dotted = f"{path}{key}"
        if key not in base:
            allowed = ", ".join(sorted(base))
            raise UserError(f"{where}: unknown option {dotted!r}; allowed here: {allowed}")
        if isinstance(base[key], dict) and key not in _OPEN_SECTIONS:
            if not isinstance(value, Mapping):
                raise UserError(f"{where}: {dotted!r} must be a mapping, got {value!r}")
            _merge(base[key], value, where, dotted + ".")
        else:
            base[key] = value


def _plain(obj: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(obj, (DictConfig, ListConfig)):
        return OmegaConf.to_container(obj, resolve=True)
    return obj


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Defaults, then the YAML at ``path`` (``configs/maskgen.yaml`` when ``None``), then
    ``key.sub=value`` overrides. Unknown keys and unreadable files raise :class:`UserError`."""
    from omegaconf import OmegaConf

    cfg = copy.deepcopy(DEFAULTS)
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.is_file():
        raise UserError(f"{path}: config file not found; pass --config with a YAML file")
    try:
        loaded = _plain(OmegaConf.load(path))
    except Exception as exc:  # yaml/omegaconf raise many types
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise UserError(f"{path}: cannot parse YAML ({type(exc).__name__}: {first}); fix the syntax") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, Mapping):
        raise UserError(f"{path}: expected a mapping at the top level of the config")
    _merge(cfg, loaded, str(path))
    if overrides:
        try:
            dot = _plain(OmegaConf.from_dotlist(list(overrides)))
        except Exception as exc:
            raise UserError(f"--set {' '.join(overrides)}: cannot parse ({exc}); use key.sub=value") from None
        _merge(cfg, dot, "--set")
    return cfg


def check_config(cfg: Mapping[str, Any], where: str = "config") -> None:
    """Sanity checks that give a one-line error instead of a crash deep in training."""
    size = cfg["data"]["image_size"]
    model = cfg["model"]
    factor = int(model["patch_size"]) * 2 ** (len(model["channel_mult"]) - 1)
    if not isinstance(size, int) or size < 8 or size % factor:
        raise UserError(f"{where}: data.image_size {size!r} must be an integer divisible by "
                        f"patch_size * 2**(levels-1) = {factor}")
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
    for key in ("epochs", "batch_size"):
        if not isinstance(train[key], int) or train[key] < 1:
            raise UserError(f"{where}: train.{key} must be a positive integer, got {train[key]!r}")
    if not 0.0 <= float(train["p_uncond"]) < 1.0:
        raise UserError(f"{where}: train.p_uncond must be in [0, 1), got {train['p_uncond']!r}")
