"""A run's weights file: safetensors with one section per model (tensors named ``<section>.<name>``), a format
name and JSON metadata (config, counters) in its header; read back without unpickling anything."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save

from ldm.checkpoint import group_sections
from runtime.atomic import write_bytes_atomic
from runtime.errors import UserError
from runtime.safe_load import first_line
from training.tensor_tree import split


@dataclass
class Weights:
    """A weights file read back: tensors per section, its format name and metadata."""

    path: Path
    sections: dict[str, dict[str, torch.Tensor]]
    metadata: dict[str, Any] = field(default_factory=dict)
    format: str = ""


def write_weights(path: str | Path, sections: Mapping[str, Mapping[str, torch.Tensor]], fmt: str,
                  metadata: Optional[Mapping[str, Any]] = None) -> Path:
    """``path`` (.safetensors): tensors named ``<section>.<name>``; ``fmt`` and ``metadata`` (as JSON) in its header."""
    flat = {f"{part}.{k}": v for part, sd in sections.items() for k, v in sd.items()}
    _, tensors = split(flat)  # detached, on the CPU, contiguous, no shared memory; named as in ``flat``
    header = {"format": fmt, "deffiller": json.dumps(dict(metadata or {}), allow_nan=False)}
    return write_bytes_atomic(st_save(tensors, metadata=header), path)


def read_weights(path: str | Path, what: str = "weights file", fix: str = "check the path") -> Weights:
    """A file of :func:`write_weights`; a missing, damaged or foreign file is a one-line :class:`UserError`."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = json.loads(header.get("deffiller", "{}"))
        if not isinstance(metadata, dict):
            raise ValueError("its metadata is not a JSON object")
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable {what} ({first_line(exc)}); {fix}") from None
    sections = group_sections(tensors)
    return Weights(path, sections, metadata, header.get("format", ""))


def read_weights_header(path: str | Path) -> tuple[str, dict[str, Any]]:
    """``(format, metadata)`` of a :func:`write_weights` file without reading its tensors; ``("", {})`` when
    it is not one."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = dict(f.metadata() or {})
        metadata = json.loads(header.get("deffiller", "{}"))
    except (SafetensorError, OSError, ValueError):
        return "", {}
    return header.get("format", ""), metadata if isinstance(metadata, dict) else {}
