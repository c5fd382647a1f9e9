"""A run's training state (optimiser, schedule, RNG states, counters, history) as two files: ``state_N.json``
(the tree of :mod:`training.tensor_tree`, naming its tensors) and ``state_N.safetensors`` (the tensors). A
legacy ``state_N.pt`` is read with ``torch.load(weights_only=True)``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as st_save

from runtime.atomic import write_bytes_atomic, write_text_atomic
from runtime.errors import UserError
from runtime.safe_load import first_line, safe_torch_load
from training.tensor_tree import join, split

STATE_FORMAT = "deffiller-train-state"
STATE_VERSION = 2


def state_tensors(path: Path) -> Path:
    """The safetensors file holding the tensors of the state JSON ``path``."""
    return Path(path).with_suffix(".safetensors")


def write_state(path: str | Path, state: Mapping[str, Any]) -> Path:
    """``state`` as ``path`` (JSON) plus its tensors in :func:`state_tensors` (written first), atomically."""
    path = Path(path)
    skeleton, tensors = split(dict(state))
    data = st_save(tensors)
    write_bytes_atomic(data, state_tensors(path))
    doc = {"tensors": state_tensors(path).name, "tensors_bytes": len(data), "state": skeleton}
    write_text_atomic(json.dumps(doc, allow_nan=False) + "\n", path)
    return path


def read_state(path: str | Path, fix: str) -> dict[str, Any]:
    """A training state written by :func:`write_state` (or a legacy ``.pt``, read weights-only); a missing,
    damaged or foreign file is a one-line :class:`UserError` ending with ``fix``."""
    path = Path(path)
    if path.suffix == ".pt":
        state = safe_torch_load(path, "training state", fix)
    else:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            tensors_path = path.parent / doc["tensors"]
            if tensors_path.stat().st_size != doc["tensors_bytes"]:
                raise ValueError(f"{tensors_path.name} is not the tensor file it was saved with")
            state = join(doc["state"], load_file(str(tensors_path)))
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
            raise UserError(f"{path}: not a readable training state ({type(exc).__name__}: {first_line(exc)}); "
                            f"{fix}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise UserError(f"{path}: not a DefFiller training-state file; {fix}")
    return state
