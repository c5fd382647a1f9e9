"""main.py's checkpoints: the run folder of :mod:`training.run_folder` with the generator's weights file, and
the per-rank RNG states.

The weights file is ``ldm.checkpoint``'s format (every part + the config, loadable by infer.py and
``ldm.checkpoint.load_models``; EMA in section ``ema``) with its ``.yaml`` next to it.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ldm.checkpoint import read_checkpoint, save_checkpoint
from training.run_folder import RunFolder, Saved, state_name, weights_name  # noqa: F401  (re-exported)
from training.state_file import read_state

RUN_FIX = "move the run folder away to start afresh, or pick another --name"


# -- RNG states ---------------------------------------------------------------------------------
def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's global RNG states as tensors and plain values (for :mod:`training.tensor_tree`)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }
    return state


def set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


# -- the run folder -----------------------------------------------------------------------------
class RunCheckpoints(RunFolder):
    """Checkpoint files of one main.py run folder."""

    def __init__(self, run_dir: Path, keep: int = 0) -> None:
        super().__init__(run_dir, "main", "deffiller", keep, RUN_FIX)

    def write_weights(self, path: Path, sections: Mapping[str, Mapping[str, torch.Tensor]], config: Any,
                      metadata: Mapping[str, Any]) -> None:
        save_checkpoint(path, sections, config, metadata)

    def read_weights(self, path: Path) -> Any:
        return read_checkpoint(path)

    def weight_files(self, iteration: int) -> list[Path]:
        weights = self.dir / weights_name(iteration)
        return [weights, weights.with_suffix(".yaml")]


def load_state(path: Path) -> dict[str, Any]:
    """Read a training-state file (``state_N.json``, or a legacy ``state_N.pt`` weights-only)."""
    return read_state(path, RUN_FIX)
