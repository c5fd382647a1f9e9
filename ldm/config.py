"""Experiment configs: one YAML in the original GLIGEN schema (``model``, ``autoencoder``,
``text_encoder``, ``diffusion``; each ``target`` + ``params``) drives construction.

Only classes in :data:`REGISTRY` can be built. The original code's class paths are accepted as
aliases, so DefFiller/GLIGEN config files (and the configs embedded in their checkpoints) load as
they are; a config can never make us import an arbitrary module.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from ldm.errors import UserError

REGISTRY = {
    "ldm.modules.unet.UNetModel",
    "ldm.modules.grounding.PositionNet",
    "ldm.modules.grounding.GroundingDownsampler",
    "ldm.modules.autoencoder.AutoencoderKL",
    "ldm.modules.identity_autoencoder.IdentityAutoencoder",
    "ldm.modules.text_encoder.FrozenCLIPEmbedder",
    "ldm.diffusion.schedule.NoiseSchedule",
}

# original class path -> ours
ORIGINAL_TARGETS = {
    "ldm.modules.diffusionmodules.openaimodel.UNetModel": "ldm.modules.unet.UNetModel",
    "ldm.modules.diffusionmodules.sem_grounding_net.PositionNet": "ldm.modules.grounding.PositionNet",
    "ldm.modules.diffusionmodules.sem_grounding_downsampler.GroundingDownsampler":
        "ldm.modules.grounding.GroundingDownsampler",
    "ldm.models.autoencoder.AutoencoderKL": "ldm.modules.autoencoder.AutoencoderKL",
    "ldm.modules.encoders.modules.FrozenCLIPEmbedder": "ldm.modules.text_encoder.FrozenCLIPEmbedder",
    "ldm.models.diffusion.ldm.LatentDiffusion": "ldm.diffusion.schedule.NoiseSchedule",
}
OUR_TO_ORIGINAL = {ours: orig for orig, ours in ORIGINAL_TARGETS.items()}

PARTS = ("model", "autoencoder", "text_encoder", "diffusion")


def load_config(path: Union[str, Path]) -> DictConfig:
    """Read a YAML config; a clear error if it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config {path} not found; pass an existing YAML (see configs/)")
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:
        raise UserError(f"config {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(cfg, DictConfig) or "model" not in cfg:
        raise UserError(f"config {path} has no `model:` section; it must follow the GLIGEN schema")
    return cfg


def resolve_target(target: str) -> type:
    """Map a (possibly original) class path to one of our registered classes."""
    ours = ORIGINAL_TARGETS.get(target, target)
    if ours not in REGISTRY:
        raise UserError(f"unknown target {target!r} in config; supported: {sorted(REGISTRY)}")
    module, name = ours.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def instantiate(node: Union[DictConfig, dict], **overrides: Any) -> Any:
    """Build ``target(**params)``; params that are themselves ``{target, params}`` are built first."""
    if "target" not in node:
        raise UserError(f"config node {dict(_plain(node))} has no `target`")
    cls = resolve_target(str(node["target"]))
    params = {}
    for key, value in (node.get("params") or {}).items():
        is_node = isinstance(value, (dict, DictConfig)) and "target" in value
        params[key] = instantiate(value) if is_node else _plain(value)
    params.update(overrides)
    try:
        return cls(**params)
    except TypeError as exc:
        raise UserError(f"bad params for {node['target']}: {exc}") from exc


def to_original_targets(cfg: Union[DictConfig, dict]) -> dict:
    """A plain-dict copy of ``cfg`` with our class paths replaced by the original code's."""
    def walk(value):
        if isinstance(value, dict):
            return {k: (OUR_TO_ORIGINAL.get(v, v) if k == "target" and isinstance(v, str) else walk(v))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value
    return walk(_plain(cfg) if not isinstance(cfg, dict) else cfg)
