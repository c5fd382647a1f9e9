"""Noticing a run whose loss has left the level it had reached: one warning naming the checkpoint to go back to.

Diffusion training at a constant learning rate can blow up after thousands of steady iterations (a gradient
spike, then a loss several times its level that never comes back); the EMA weights follow the broken ones
within a few hundred iterations. The watch reads the loss averaged over each logging window: once
``PATIENCE`` windows in a row are more than ``FACTOR`` times the lowest window so far, it says so once. A resumed
run first replays the windows of its log, so a run resumed in the middle of a blow-up is told at once.
"""
from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from training.run_folder import Saved

FACTOR = 3.0    # a window's mean loss this many times the best window's
PATIENCE = 3    # consecutive windows above it


@dataclass
class DivergenceWatch:
    factor: float = FACTOR
    patience: int = PATIENCE
    best: float = math.inf
    best_iteration: int = 0
    above: int = 0
    rose_at: Optional[int] = None   # the end of the last window at the level, where the rise began
    warned: bool = False
    last: float = math.nan          # the last window's loss read

    def update(self, iteration: int, loss: float, window_start: int) -> bool:
        """Read one window's mean ``loss`` (iterations ``window_start + 1 .. iteration``); True the first time
        the run looks diverged (from then on it stays quiet)."""
        if not math.isfinite(loss):
            return False
        self.last = loss
        if self.warned:
            return False
        if loss > self.factor * self.best:
            if self.above == 0:
                self.rose_at = window_start
            self.above += 1
            if self.above >= self.patience:
                self.warned = True
                return True
            return False
        self.above = 0
        if loss < self.best:
            self.best, self.best_iteration = loss, iteration
        return False

    def replay(self, rows: Iterable[Mapping[str, Any]]) -> bool:
        """Read the windows of a run's earlier log (the ``metrics.jsonl`` rows that carry a ``loss``), as a resumed
        run does; True if they show a run that had already diverged."""
        start = 0
        for row in rows:
            try:
                loss = float(row["loss"])
            except (KeyError, TypeError, ValueError):  # another kind of row, or a hand-edited one
                continue
            self.update(int(row["iteration"]), loss, start)
            start = int(row["iteration"])
        return self.warned

    def message(self, loss: float, before: Optional[Saved]) -> str:
        """The warning, one line; ``before``: the newest checkpoint saved before the rise."""
        if before is not None:
            run = before.weights.parent.parent
            back = (f"the last checkpoint saved before it is {before.weights} (infer.py --ckpt takes it); go back "
                    f"to it with `python -m training.rewind {shlex.quote(str(run))} --to {before.iteration}` and "
                    "continue the run with --set train.grad_clip=1.0")
        else:
            back = "no checkpoint was saved before it; train again with --set train.grad_clip=1.0"
        return (f"warning: the loss rose after iteration {self.rose_at} and stayed up: {loss:.4g} over the last "
                f"window, {loss / self.best:.1f}x its best {self.best:.4g} (iteration {self.best_iteration}); the run "
                f"has probably diverged and its EMA weights will follow; {back}")
