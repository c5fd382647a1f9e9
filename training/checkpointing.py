"""Run-folder checkpoints that survive a crash or kill at any moment, and auto-resume.

Per save at iteration N (rank 0 only), in this order, each file written atomically (temporary file,
fsync, rename) by ``ldm.checkpoint``'s writer:

  checkpoints/ckpt_N.safetensors (+ .yaml)   weights of every part + config (loadable by infer.py,
                                             ``ldm.checkpoint.load_models``); EMA in section ``ema``
  checkpoints/state_N.pt                     optimiser, scheduler, grad scaler, per-rank RNG states,
                                             iteration (read back with ``runtime.safe_load.safe_torch_load``)
  latest.json                                the pointer, moved only after both files are complete
  checkpoints/latest.safetensors             convenience symlink to the newest weights

A kill during any write leaves a stray ``.*.tmp`` file (removed at the next start) and the previous
pointer intact. Resume reads ``latest.json``; if it is missing or names unreadable files, the newest
complete, readable pair in ``checkpoints/`` is used instead.
"""
from __future__ import annotations

import io
import json
import os
import random
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from ldm.checkpoint import read_checkpoint, save_checkpoint
from runtime.atomic import write_bytes_atomic
from runtime.errors import UserError
from runtime.safe_load import safe_torch_load

STATE_FORMAT = "deffiller-train-state"
STATE_VERSION = 1
POINTER = "latest.json"
_CKPT_RE = re.compile(r"^ckpt_(\d{8,})\.safetensors$")


@dataclass
class Saved:
    iteration: int
    weights: Path
    state: Path


def weights_name(iteration: int) -> str:
    return f"ckpt_{iteration:08d}.safetensors"


def state_name(iteration: int) -> str:
    return f"state_{iteration:08d}.pt"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- RNG states ---------------------------------------------------------------------------------
def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's global RNG states as tensors and plain values (weights_only-loadable)."""
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


# -- saving -------------------------------------------------------------------------------------
class RunCheckpoints:
    """Checkpoint files of one run folder."""

    def __init__(self, run_dir: Path, keep: int = 0) -> None:
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / "checkpoints"
        self.keep = keep

    def remove_stray_temporaries(self) -> None:
        """Delete temporary files a killed writer left behind."""
        for folder in (self.run_dir, self.dir):
            if folder.is_dir():
                for path in folder.glob(".*.tmp"):
                    path.unlink(missing_ok=True)

    def save(self, iteration: int, sections: Mapping[str, Mapping[str, torch.Tensor]], config: Any,
             state: Mapping[str, Any], metadata: Optional[Mapping[str, Any]] = None) -> Saved:
        self.dir.mkdir(parents=True, exist_ok=True)
        weights = self.dir / weights_name(iteration)
        state_path = self.dir / state_name(iteration)
        meta = {"iteration": iteration, **(metadata or {})}
        save_checkpoint(weights, sections, config, meta)
        payload = {"format": STATE_FORMAT, "version": STATE_VERSION, "iteration": iteration,
                   "weights": weights.name, **state}
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        write_bytes_atomic(buffer.getvalue(), state_path)
        _fsync_dir(self.dir)
        pointer = {"iteration": iteration, "weights": f"checkpoints/{weights.name}",
                   "state": f"checkpoints/{state_path.name}", "saved_at": time.strftime("%Y-%m-%d %H:%M:%S")}
        write_bytes_atomic((json.dumps(pointer, indent=2) + "\n").encode(), self.run_dir / POINTER)
        _fsync_dir(self.run_dir)
        self._link_latest(weights)
        self._prune(iteration)
        return Saved(iteration, weights, state_path)

    def _link_latest(self, weights: Path) -> None:
        link = self.dir / "latest.safetensors"
        tmp = self.dir / ".latest.safetensors.link.tmp"
        try:
            tmp.unlink(missing_ok=True)
            os.symlink(weights.name, tmp)
            os.replace(tmp, link)
        except OSError:  # no symlinks here (some Windows set-ups): latest.json is the pointer
            tmp.unlink(missing_ok=True)

    def _prune(self, newest: int) -> None:
        if self.keep <= 0:
            return
        done = sorted(self.complete_iterations(), reverse=True)
        for iteration in done[self.keep:]:
            if iteration == newest:
                continue
            for path in (self.dir / weights_name(iteration), self.dir / state_name(iteration),
                         (self.dir / weights_name(iteration)).with_suffix(".yaml")):
                path.unlink(missing_ok=True)

    # -- finding the checkpoint to resume from ---------------------------------------------------
    def complete_iterations(self) -> list[int]:
        if not self.dir.is_dir():
            return []
        found = []
        for path in self.dir.iterdir():
            match = _CKPT_RE.match(path.name)
            if match and (self.dir / state_name(int(match.group(1)))).is_file():
                found.append(int(match.group(1)))
        return sorted(found)

    def _from_pointer(self) -> Optional[Saved]:
        pointer = self.run_dir / POINTER
        if not pointer.is_file():
            return None
        try:
            data = json.loads(pointer.read_text())
            saved = Saved(int(data["iteration"]), self.run_dir / data["weights"], self.run_dir / data["state"])
        except (ValueError, KeyError, TypeError, OSError):
            warnings.warn(f"{pointer} is unreadable; looking for the newest complete checkpoint instead")
            return None
        return saved

    def latest(self) -> Optional[tuple[Saved, dict[str, Any], Any]]:
        """The newest readable (saved files, training state, weights checkpoint), or None for a fresh run.

        The pointer wins; without a usable pointer, the newest complete pair does.
        """
        pointed = self._from_pointer()
        older = [it for it in sorted(self.complete_iterations(), reverse=True)
                 if pointed is None or it < pointed.iteration]
        candidates = ([pointed] if pointed is not None else []) + [
            Saved(it, self.dir / weights_name(it), self.dir / state_name(it)) for it in older]
        for saved in candidates:
            try:
                state = load_state(saved.state)
                weights = read_checkpoint(saved.weights)
            except (UserError, OSError) as exc:
                warnings.warn(f"skipping the checkpoint of iteration {saved.iteration}: {exc}")
                continue
            return saved, state, weights
        if candidates:
            raise UserError(f"{self.run_dir}: no readable checkpoint to resume from; move the folder away "
                            "to start afresh, or pick another --name")
        return None


def load_state(path: Path) -> dict[str, Any]:
    """Read a training-state file safely (tensors and plain containers only)."""
    state = safe_torch_load(path, "training state", "move the run folder away to start afresh, or pick another --name")
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise UserError(f"{path}: not a DefFiller training-state file")
    return state
