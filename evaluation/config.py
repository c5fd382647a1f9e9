"""YAML configs (OmegaConf) with defaults, ``--set key=value`` overrides and one-line errors."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf

from dataset.io import load_yaml_mapping
from ldm.errors import UserError

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs" / "eval"


def load_config(path: str | Path | None, defaults: str | Path | None = None,
                overrides: Sequence[str] = ()) -> DictConfig:
    """``defaults`` (a YAML path) merged with ``path`` and then with dotlist ``overrides``."""
    parts = []
    for p in (defaults, path):
        if p is None:
            continue
        parts.append(load_yaml_mapping(p, "config", f"pass a YAML mapping (see {CONFIG_DIR})"))
    cfg = OmegaConf.merge(*parts) if parts else OmegaConf.create({})
    for item in overrides:
        key, sep, raw = str(item).partition("=")
        if not sep or not key.strip():
            raise UserError(f"config override {item!r}: write it as key=value (e.g. train.epochs=5)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
            OmegaConf.update(cfg, key.strip(), value, merge=True, force_add=True)
        except Exception as exc:  # yaml / omegaconf errors
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"config override {item!r}: {first}; write it as key=value") from None
    if not isinstance(cfg, DictConfig):
        raise UserError(f"{path}: the config must be a YAML mapping")
    return cfg


def to_plain(cfg: Any) -> Any:
    if isinstance(cfg, DictConfig) or OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def require(cfg: DictConfig, key: str, where: str) -> Any:
    value = OmegaConf.select(cfg, key)
    if value is None:
        raise UserError(f"{where}: missing '{key}'; add it to the config or pass --set {key}=...")
    return value
