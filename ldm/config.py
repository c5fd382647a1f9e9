"""Experiment configs: one YAML in the original GLIGEN schema (``model``, ``autoencoder``,
``text_encoder``, ``diffusion``; each ``target`` + ``params``) drives construction.

Only classes in :data:`REGISTRY` can be built. The original code's class paths are accepted as
aliases, so DefFiller/GLIGEN config files (and the configs embedded in their checkpoints) load as
they are; a config can never make us import an arbitrary module.
"""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from runtime import options as O
from runtime.errors import UserError, require_file

REGISTRY = {
    "ldm.modules.mask_upscaler.MaskUpscaler",
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

PARTS = ("model", "autoencoder", "text_encoder", "diffusion", "upscaler")


# top-level sections: the parts, the training sections (checked by training/options.py), the
# recommended sampling settings (values checked by inference.generate.recommended_sampling) and the
# original DefFiller/GLIGEN keys that original config files carry (read by nothing here)
SECTIONS = (*PARTS, "data", "train", "sampling")
SAMPLING_SCHEMA = {"sampler": O.Open(), "steps": O.Open(), "guidance_scale": O.Open(),
                   "guidance_interval": O.Open(), "guidance_low": O.Open()}
ORIGINAL_EXTRA = ("train_dataset_names", "grounding_tokenizer_input", "train_dataset_repeats")


def load_config(path: Union[str, Path], strict: bool = True) -> DictConfig:
    """Read a YAML config; one-line errors if it is missing, malformed, has an unresolvable
    interpolation or (``strict``) an unknown key at the top level or in a part's ``target``/``params``."""
    path = require_file(path, "config file", "pass an existing YAML (see configs/)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"config {path}: cannot read it ({type(exc).__name__})") from None
    cfg = config_from_text(text, f"config {path}")
    if "model" not in cfg:
        raise UserError(f"config {path} has no `model:` section; it must follow the GLIGEN schema")
    if strict:
        check_config(cfg, f"config {path}")
    return cfg


def config_from_text(text: str, where: str) -> DictConfig:
    """A YAML text (a file, checkpoint metadata, a sidecar) as a resolved DictConfig, or one line."""
    data = O.parse_yaml(text, where)
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a YAML mapping of sections (model:, diffusion:, ...), "
                        f"got {type(data).__name__}")
    return OmegaConf.create(O.resolve(data, where))


def config_from_mapping(data: Any, where: str) -> DictConfig:
    """A config given as a mapping (e.g. a checkpoint's ``config_dict``) as a resolved DictConfig."""
    try:
        plain = _plain(data) if isinstance(data, (DictConfig, ListConfig)) else data
        if not isinstance(plain, Mapping):
            raise TypeError(f"a {type(plain).__name__}")
        return OmegaConf.create(O.resolve(dict(plain), where))
    except UserError:
        raise
    except Exception as exc:  # a malformed OmegaConf object can fail in many ways
        raise UserError(f"{where}: the embedded config is malformed ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:160]}); pass a config with --config") from None


def parameter_names(cls: type) -> Optional[list[str]]:
    """The keyword parameters of ``cls``'s constructor; ``None`` when it takes ``**kwargs``."""
    params = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.name != "self" and p.kind is not inspect.Parameter.VAR_POSITIONAL]


def part_schema(node: Any) -> Any:
    """Schema of one ``{target, params}`` node: params checked against the constructor's parameters."""
    if not isinstance(node, Mapping) or "target" not in node:
        return O.Open()
    names = parameter_names(resolve_target(str(node["target"])))
    params = O.Open() if names is None else {n: O.Open() for n in names}
    return {"target": None, "params": params}


def schema_for(cfg: Mapping[str, Any], sections: Optional[Mapping[str, Any]] = None) -> dict:
    """The schema of an experiment config: its parts (by their targets), ``data``/``train`` (``sections``
    gives their schemas; free-form otherwise) and the original extra keys."""
    schema: dict[str, Any] = {part: part_schema(cfg.get(part)) for part in PARTS}
    for name in ("data", "train"):
        schema[name] = (sections or {}).get(name, O.Open())
    if "sampling" in cfg:
        schema["sampling"] = SAMPLING_SCHEMA
    for name in ORIGINAL_EXTRA:
        schema[name] = O.Open()
    return schema


def check_config(cfg: Union[DictConfig, Mapping[str, Any]], where: str,
                 sections: Optional[Mapping[str, Any]] = None) -> None:
    """Strict keys: an unknown section or constructor parameter is a one-line error naming the
    nearest valid key."""
    plain = _plain(cfg) if isinstance(cfg, DictConfig) else dict(cfg)
    O.check(plain, schema_for(plain, sections), where)


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
    names = parameter_names(cls)
    if names is not None:
        for key in params:
            if key not in names:
                raise O.unknown_key("config", f"{node['target']}.params.{key}", names)
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise UserError(f"bad params for {node['target']}: {' '.join(str(exc).split())}") from exc


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
