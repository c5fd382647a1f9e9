"""The mask producer's checkpoints: its run folder (:mod:`training.run_folder`: weights sections ``model`` and
``ema`` with the config, categories and counters in their metadata), a checkpoint file or run folder read
back for sampling, and a legacy ``checkpoints/last.pt`` (read with ``weights_only=True``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from runtime.errors import UserError
from runtime.safe_load import safe_torch_load
from training.run_folder import RunFolder, pointed_weights
from training.weights_file import read_weights

WEIGHTS_FORMAT = "deffiller-maskgen"
LEGACY_FORMAT = "deffiller-maskgen-v1"
RUN_FIX = "use a new --out, or move the run folder away to start afresh"
LEGACY_LAST = "checkpoints/last.pt"
LEGACY_NAMES = (LEGACY_LAST, "last.pt")     # where readers look for a legacy checkpoint in a folder
LEGACY_LOG = "train_log.csv"
FILE_FIX = "pass a checkpoint written by python -m maskgen.train, or its run folder"


def run_folder(out: str | Path) -> RunFolder:
    """The run folder of ``maskgen.train --out`` (the newest checkpoint only is kept)."""
    return RunFolder(out, "maskgen", WEIGHTS_FORMAT, keep=1, fix=RUN_FIX)


def legacy_checkpoint(folder: str | Path, names: tuple[str, ...] = LEGACY_NAMES) -> Optional[Path]:
    """A folder's legacy ``last.pt`` (a broken link too: it is an error, not a fresh start)."""
    for name in names:
        path = Path(folder) / name
        if path.is_file() or path.is_symlink():
            return path
    return None


@dataclass
class ResumePoint:
    """Where a run continues: its weights file (or legacy ``last.pt``), the config and weights, and the training
    state (``opt``, ``rng``, ``epoch``, ``batch``, ``step``, ``elapsed_s``, ``history``)."""

    source: Path
    config: dict[str, Any]
    model: dict[str, torch.Tensor]
    ema: Optional[dict[str, torch.Tensor]]
    state: dict[str, Any]


def resume_point(out: str | Path) -> Optional[ResumePoint]:
    """The newest checkpoint of run folder ``out``, else its legacy ``last.pt``; None for a fresh run."""
    found = run_folder(out).latest()
    if found is not None:
        saved, state, weights = found
        return ResumePoint(saved.weights, weights.metadata.get("config") or {}, weights.sections.get("model", {}),
                           weights.sections.get("ema"), state)
    legacy = legacy_checkpoint(out, (LEGACY_LAST,))
    if legacy is None:
        return None
    ckpt = load_checkpoint(legacy)
    return ResumePoint(legacy, ckpt["config"], ckpt["model"], ckpt.get("ema"), ckpt)


def save(out: str | Path, cfg: Mapping[str, Any], model: torch.nn.Module, ema_state: Mapping[str, torch.Tensor],
         state: Mapping[str, Any], num_params: int) -> Path:
    """Checkpoint the run at ``state["step"]`` (it replaces a legacy ``last.pt`` and ``train_log.csv``); returns
    the weights file."""
    counters = {k: state[k] for k in ("epoch", "batch", "step")}
    saved = run_folder(out).save(int(state["step"]), {"model": model.state_dict(), "ema": dict(ema_state)}, dict(cfg),
                                 dict(state), {"categories": cfg["categories"], "num_params": num_params, **counters})
    for name in (LEGACY_LAST, LEGACY_LOG):
        (Path(out) / name).unlink(missing_ok=True)
    return saved.weights


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a training run folder (the weights its ``latest.json`` names, else a legacy
    ``checkpoints/last.pt``)."""
    path = Path(path)
    if path.is_dir():
        found = pointed_weights(path) or legacy_checkpoint(path)
        if found is None:
            raise UserError(f"{path}: no maskgen checkpoint in this folder (latest.json, checkpoints/ckpt_*.safetensors"
                            "); pass a maskgen checkpoint file or a maskgen.train run folder")
        return found
    if not path.is_file() and not path.is_symlink():  # a broken link is reported by the loader
        raise UserError(f"{path}: checkpoint not found; pass a maskgen checkpoint file or run folder")
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint (file or run folder) as ``{config, categories, model, ema, epoch, step, ..., path}``."""
    path = resolve_checkpoint(path)
    if path.suffix == ".safetensors":
        weights = read_weights(path, "maskgen checkpoint", FILE_FIX)
        if weights.format != WEIGHTS_FORMAT or "model" not in weights.sections:
            raise UserError(f"{path}: not a maskgen checkpoint (format {weights.format!r}); train one with "
                            "python -m maskgen.train")
        ckpt = {**weights.metadata, "format": weights.format, "model": weights.sections["model"],
                "ema": weights.sections.get("ema")}
    else:
        ckpt = safe_torch_load(path, "maskgen checkpoint", FILE_FIX)
        if not isinstance(ckpt, dict) or ckpt.get("format") != LEGACY_FORMAT:
            raise UserError(f"{path}: not a maskgen checkpoint (expected format {WEIGHTS_FORMAT!r}); "
                            "train one with python -m maskgen.train")
    if not isinstance(ckpt.get("config"), dict) or "categories" not in ckpt:
        raise UserError(f"{path}: a maskgen checkpoint without its config; retrain with python -m maskgen.train")
    ckpt["path"] = str(path)
    return ckpt
