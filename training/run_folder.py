"""The run folder of every DefFiller trainer (``main.py``, ``maskgen.train``, ``evaluation.detector.train``).

Per save at iteration N (optimiser steps so far), in this order, each file written atomically (temporary
file, fsync, rename):

  checkpoints/ckpt_N.safetensors    weights, one section per model (``model``, ``ema``, ...), and metadata
  checkpoints/state_N.safetensors   the tensors of the training state (optimiser moments, RNG states)
  checkpoints/state_N.json          the rest of the training state (counters, schedule, history), naming
                                    its tensors in the file above
  latest.json                       the pointer, moved only after the three files are complete
  checkpoints/latest.safetensors    a convenience symlink to the newest weights

The weights file is :mod:`training.weights_file`'s, the state files are :mod:`training.state_file`'s. Next to
them: ``metrics.jsonl`` (the log, :mod:`training.jsonl_log`) and ``config.yaml``. Nothing here is unpickled: a
legacy ``state_N.pt`` is read with ``torch.load(weights_only=True)``.

A kill during any write leaves a stray ``.*.tmp`` file (removed at the next start) and the previous pointer
intact. Resume reads ``latest.json``; if it is missing or names unreadable files, the newest complete,
readable checkpoint in ``checkpoints/`` is used instead.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from runtime.atomic import fsync_dir, write_text_atomic
from runtime.errors import UserError
from training.state_file import STATE_FORMAT, STATE_VERSION, read_state, state_tensors, write_state
from training.weights_file import read_weights, write_weights

POINTER = "latest.json"
_CKPT_RE = re.compile(r"^ckpt_(\d{8,})\.safetensors$")


@dataclass
class Saved:
    iteration: int
    weights: Path
    state: Path      # the state's JSON file (or a legacy ``state_N.pt``)


def weights_name(iteration: int) -> str:
    return f"ckpt_{iteration:08d}.safetensors"


def state_name(iteration: int) -> str:
    return f"state_{iteration:08d}.json"


def legacy_state_name(iteration: int) -> str:
    return f"state_{iteration:08d}.pt"


# -- the run folder ---------------------------------------------------------------------------------
class RunFolder:
    """Checkpoints of one run folder: ``save`` one, find the ``latest`` one to resume from.

    ``trainer`` names the trainer (recorded in each state, checked on resume), ``weights_format`` the format
    name in its weights files, ``keep`` how many checkpoints to keep (0: all) and ``fix`` ends the message of
    an unreadable run ("move the folder away ...").
    """

    def __init__(self, run_dir: str | Path, trainer: str, weights_format: str, keep: int = 0,
                 fix: str = "move the run folder away to start afresh") -> None:
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / "checkpoints"
        self.trainer, self.weights_format = trainer, weights_format
        self.keep, self.fix = keep, fix

    def remove_stray_temporaries(self) -> None:
        """Delete temporary files a killed writer left behind."""
        for folder in (self.run_dir, self.dir):
            if folder.is_dir():
                for path in folder.glob(".*.tmp"):
                    path.unlink(missing_ok=True)

    def clear(self) -> None:
        """Remove the checkpoints and the pointer (a run started afresh in the same folder)."""
        (self.run_dir / POINTER).unlink(missing_ok=True)
        if self.dir.is_dir():
            shutil.rmtree(self.dir)

    # -- the weights file (overridden by the generator's checkpoints) -------------------------------
    def write_weights(self, path: Path, sections: Mapping[str, Mapping[str, torch.Tensor]], config: Any,
                      metadata: Mapping[str, Any]) -> None:
        write_weights(path, sections, self.weights_format, {**metadata, "config": config})

    def read_weights(self, path: Path) -> Any:
        weights = read_weights(path, f"{self.trainer} checkpoint", self.fix)
        if weights.format != self.weights_format:
            raise UserError(f"{path}: not a {self.trainer} checkpoint (format {weights.format!r}); {self.fix}")
        return weights

    def weight_files(self, iteration: int) -> list[Path]:
        """The files of one checkpoint's weights (for pruning)."""
        return [self.dir / weights_name(iteration)]

    # -- saving -----------------------------------------------------------------------------------
    def save(self, iteration: int, sections: Mapping[str, Mapping[str, torch.Tensor]], config: Any,
             state: Mapping[str, Any], metadata: Optional[Mapping[str, Any]] = None,
             spare: Optional[int] = None) -> Saved:
        """Write checkpoint ``iteration`` (weights, state, then the pointer) and prune old ones, never ``spare``."""
        self.dir.mkdir(parents=True, exist_ok=True)
        weights = self.dir / weights_name(iteration)
        state_path = self.dir / state_name(iteration)
        self.write_weights(weights, sections, config, {"iteration": iteration, **(metadata or {})})
        write_state(state_path, {"format": STATE_FORMAT, "version": STATE_VERSION, "trainer": self.trainer,
                                 "iteration": iteration, "weights": weights.name, **state})
        fsync_dir(self.dir)
        write_pointer(self.run_dir, iteration, weights, state_path, self.trainer)
        link_latest(weights)
        self._prune(iteration, spare)
        return Saved(iteration, weights, state_path)

    def _prune(self, newest: int, spare: Optional[int] = None) -> None:
        if self.keep <= 0:
            return
        done = sorted(self.complete_iterations(), reverse=True)
        for iteration in done[self.keep:]:
            if iteration in (newest, spare):
                continue
            state = self.dir / state_name(iteration)
            for path in (*self.weight_files(iteration), state, state_tensors(state),
                         self.dir / legacy_state_name(iteration)):
                path.unlink(missing_ok=True)

    # -- finding the checkpoint to resume from ------------------------------------------------------
    def complete_iterations(self) -> list[int]:
        """Iterations with a weights file and a complete training state."""
        return complete_iterations(self.dir)

    def _from_pointer(self) -> Optional[Saved]:
        pointer = self.run_dir / POINTER
        if not pointer.is_file():
            return None
        try:
            data = json.loads(pointer.read_text())
            return Saved(int(data["iteration"]), self.run_dir / data["weights"], self.run_dir / data["state"])
        except (ValueError, KeyError, TypeError, OSError):
            warnings.warn(f"{pointer} is unreadable; looking for the newest complete checkpoint instead")
            return None

    def latest(self) -> Optional[tuple[Saved, dict[str, Any], Any]]:
        """The newest readable (saved files, training state, weights), or None for a fresh run.

        The pointer wins; without a usable pointer, the newest complete checkpoint does. None readable is a
        one-line :class:`UserError` naming the first problem; another trainer's run is one too.
        """
        pointed = self._from_pointer()
        older = [it for it in sorted(self.complete_iterations(), reverse=True)
                 if pointed is None or it < pointed.iteration]
        candidates = ([pointed] if pointed is not None else []) + [
            Saved(it, self.dir / weights_name(it), complete_state(self.dir, it) or self.dir / state_name(it))
            for it in older]
        problems: list[tuple[int, str]] = []
        for saved in candidates:
            try:
                state = read_state(saved.state, self.fix)
                found = state.get("trainer", "main")
                if found != self.trainer:
                    raise WrongTrainer(f"{self.run_dir}: holds a {found} run, not a {self.trainer} run; {self.fix}")
                weights = self.read_weights(saved.weights)
            except WrongTrainer:
                raise
            except (UserError, OSError) as exc:
                problems.append((saved.iteration, str(exc)))
                continue
            for iteration, problem in problems:  # resuming from an older checkpoint: say why
                warnings.warn(f"skipping the checkpoint of iteration {iteration}: {problem}")
            return saved, state, weights
        if problems:
            first = problems[0][1].split("; ")[0]
            raise UserError(f"{self.run_dir}: no readable checkpoint to resume from ({first}); {self.fix}")
        return None


def write_pointer(run_dir: Path, iteration: int, weights: Path, state: Path, trainer: str) -> None:
    """Point ``latest.json`` at one checkpoint's files (atomically, then the folder is synced)."""
    pointer = {"iteration": iteration, "weights": f"checkpoints/{weights.name}",
               "state": f"checkpoints/{state.name}", "trainer": trainer,
               "saved_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_text_atomic(json.dumps(pointer, indent=2) + "\n", run_dir / POINTER)
    fsync_dir(run_dir)


def link_latest(weights: Path) -> None:
    """Point the convenience symlink ``checkpoints/latest.safetensors`` at ``weights`` (in the same folder)."""
    link = weights.parent / "latest.safetensors"
    tmp = weights.parent / ".latest.safetensors.link.tmp"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(weights.name, tmp)
        os.replace(tmp, link)
    except OSError:  # no symlinks here (some Windows set-ups): latest.json is the pointer
        tmp.unlink(missing_ok=True)


class WrongTrainer(UserError):
    """A run folder written by another trainer."""


def complete_state(folder: Path, iteration: int) -> Optional[Path]:
    """The complete training state of checkpoint ``iteration`` in ``folder`` (JSON + tensors, or legacy .pt)."""
    state = folder / state_name(iteration)
    if state.is_file() and state_tensors(state).is_file():
        return state
    legacy = folder / legacy_state_name(iteration)
    return legacy if legacy.is_file() else None


def complete_iterations(folder: str | Path) -> list[int]:
    """Iterations in a ``checkpoints/`` folder with a weights file and a complete training state."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _CKPT_RE.match(path.name)
        if match and complete_state(folder, int(match.group(1))) is not None:
            found.append(int(match.group(1)))
    return sorted(found)


def pointed_weights(run_dir: str | Path) -> Optional[Path]:
    """The weights file a run folder's pointer names, else its newest complete checkpoint's; None without one."""
    run_dir = Path(run_dir)
    try:
        data = json.loads((run_dir / POINTER).read_text())
        path = run_dir / data["weights"]
        if path.is_file():
            return path
    except (OSError, ValueError, KeyError, TypeError):
        pass
    done = complete_iterations(run_dir / "checkpoints")
    return run_dir / "checkpoints" / weights_name(done[-1]) if done else None
