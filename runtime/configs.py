"""The repository's config folders and the YAML configs of the evaluation commands: defaults -> YAML ->
``--set key=value``, strict about keys (:mod:`runtime.options`), returned as OmegaConf for attribute access."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from runtime import options as O
from runtime.errors import UserError


def project_root() -> Path:
    """The checkout these packages live in; for an installed copy (no ``configs/`` beside the packages), the
    current folder: relative config, data and weight paths are read from there."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "configs").is_dir() else Path.cwd().resolve()


REPO = project_root()
EVAL_CONFIG_DIR = REPO / "configs" / "eval"


def schema_of(defaults: str | Path) -> dict:
    """The schema a defaults YAML describes (its keys and value types)."""
    data = O.read_yaml(defaults, "defaults")
    if not isinstance(data, dict):
        raise UserError(f"defaults {defaults}: the config must be a YAML mapping")
    return data


def load_config(path: str | Path | None, defaults: str | Path | None = None,
                overrides: Sequence[str] = (), schema: Optional[Any] = None,
                flag: str = "--set") -> DictConfig:
    """``schema`` (or the YAML ``defaults``, whose keys are then the valid keys) merged with ``path``
    and then with ``key=value`` ``overrides``; an unknown key anywhere is a one-line error naming the
    nearest valid key."""
    if schema is None:
        schema = schema_of(defaults) if defaults is not None else O.Open({})
    cfg = O.layered(schema, path, overrides, flag=flag)
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: the config must be a YAML mapping")
    return OmegaConf.create(cfg)


def to_plain(cfg: Any) -> Any:
    """An OmegaConf config as plain dicts and lists (interpolations resolved); anything else as it is."""
    if isinstance(cfg, DictConfig) or OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg
