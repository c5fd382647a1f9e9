"""The detector's files: its run folder (:mod:`training.run_folder`: weights section ``model`` with the config
in its metadata; the training state holds the optimiser, the schedule, the history and the best validation
weights), its final weights ``detector.safetensors`` (config and run summary in the metadata), and legacy ``last.pt`` /
``detector.pt`` / ``train_log.json`` files (the ``.pt`` files read weights-only)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from runtime.errors import UserError
from runtime.safe_load import safe_torch_load
from training.run_folder import RunFolder
from training.weights_file import read_weights, read_weights_header, write_weights

WEIGHTS_FORMAT = "deffiller-detector"
FINAL = "detector.safetensors"
LEGACY_FINAL = "detector.pt"
LEGACY_LAST = "last.pt"
LEGACY_LOG = "train_log.json"
RUN_FIX = "use a new --out, or move the run folder away to start afresh"
FILE_FIX = "point --ckpt at the detector.safetensors (or run folder) written by python -m evaluation.detector.train"


def run_folder(out: str | Path) -> RunFolder:
    """The run folder of ``evaluation.detector.train --out`` (the newest checkpoint only is kept)."""
    return RunFolder(out, "detector", WEIGHTS_FORMAT, keep=1, fix=RUN_FIX)


@dataclass
class ResumePoint:
    """Where a run continues: its weights file (or legacy ``last.pt``), the config and weights it was saved
    with, and the training state (``optimizer``, ``scheduler``, ``epoch``, ``history``, ``best``)."""

    source: Path
    config: Optional[dict[str, Any]]
    model: dict[str, torch.Tensor]
    state: dict[str, Any]


def resume_point(out: str | Path) -> Optional[ResumePoint]:
    """The newest checkpoint of run folder ``out``, else its legacy ``last.pt``; None for a fresh run."""
    found = run_folder(out).latest()
    if found is not None:
        saved, state, weights = found
        return ResumePoint(saved.weights, weights.metadata.get("config"), weights.sections.get("model", {}), state)
    legacy = Path(out) / LEGACY_LAST
    if not (legacy.is_file() or legacy.is_symlink()):  # a broken link is an error, not a fresh start
        return None
    state = safe_torch_load(legacy, "detector training state", "use a new --out, or delete it to start from scratch")
    if not isinstance(state, dict):
        raise UserError(f"{legacy}: not a detector.train last.pt; {RUN_FIX}")
    config = state.get("config") if isinstance(state.get("config"), dict) else None
    return ResumePoint(legacy, config, state.get("model"), state)


def save_checkpoint(out: str | Path, iteration: int, model_state: Mapping[str, torch.Tensor],
                    config: Mapping[str, Any], state: Mapping[str, Any]) -> None:
    """Checkpoint the run after an epoch (it replaces a legacy ``last.pt``)."""
    run_folder(out).save(iteration, {"model": model_state}, dict(config), dict(state), {"epoch": state["epoch"]})
    (Path(out) / LEGACY_LAST).unlink(missing_ok=True)


def save_final(out: str | Path, model_state: Mapping[str, torch.Tensor], config: Mapping[str, Any],
               metadata: Mapping[str, Any]) -> Path:
    """``OUT/detector.safetensors`` (it replaces a legacy ``detector.pt`` and ``train_log.json``)."""
    path = write_final(Path(out) / FINAL, model_state, config, metadata)
    for name in (LEGACY_FINAL, LEGACY_LOG):
        (Path(out) / name).unlink(missing_ok=True)
    return path


def clear_run(out: str | Path) -> None:
    """Remove a previous run's checkpoints, log and final weights (a run started afresh in the same folder)."""
    run_folder(out).clear()
    for name in ("metrics.jsonl", FINAL, LEGACY_FINAL, LEGACY_LAST, LEGACY_LOG):
        (Path(out) / name).unlink(missing_ok=True)


def write_final(path: str | Path, model_state: Mapping[str, torch.Tensor], config: Mapping[str, Any],
                metadata: Mapping[str, Any]) -> Path:
    """The detector weights for prediction: section ``model``; ``config`` and ``metadata`` in the header."""
    return write_weights(path, {"model": model_state}, WEIGHTS_FORMAT, {**metadata, "config": dict(config)})


def detector_file(run_dir: str | Path) -> Optional[Path]:
    """A run folder's final weights: ``detector.safetensors``, else a legacy ``detector.pt``; None before the end."""
    for name in (FINAL, LEGACY_FINAL):
        if (Path(run_dir) / name).is_file():
            return Path(run_dir) / name
    return None


def read_detector(path: str | Path) -> dict[str, Any]:
    """Detector weights (a final or per-epoch weights file, a legacy ``.pt`` or a run folder) as
    ``{model, config, ...}``; a missing, damaged or foreign file is a one-line :class:`UserError`."""
    path = Path(path)
    if path.is_dir():
        found = detector_file(path)
        if found is None:
            raise UserError(f"{path}: no {FINAL} in this folder (training unfinished?); {FILE_FIX}")
        path = found
    if path.suffix == ".safetensors":
        weights = read_weights(path, "detector checkpoint", FILE_FIX)
        if weights.format != WEIGHTS_FORMAT or "model" not in weights.sections:
            raise UserError(f"{path}: not a detector checkpoint (format {weights.format!r}); {FILE_FIX}")
        state = {**weights.metadata, "model": weights.sections["model"]}
    else:
        state = safe_torch_load(path, "detector checkpoint", f"{FILE_FIX}, or train one")
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) or "config" not in state:
        raise UserError(f"{path}: not a detector checkpoint (needs 'model' and 'config'); {FILE_FIX}")
    return state


def run_summary(run_dir: str | Path) -> dict[str, Any]:
    """A finished run's summary (steps, warm-up steps, epochs, selected epoch, ...): from its final weights'
    metadata, else a legacy ``train_log.json``; {} when there is neither."""
    final = Path(run_dir) / FINAL
    if final.is_file():
        fmt, meta = read_weights_header(final)
        if fmt == WEIGHTS_FORMAT and isinstance(meta.get("summary"), dict):
            return meta["summary"]
    try:
        data = json.loads((Path(run_dir) / LEGACY_LOG).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
