"""What a stage is: its dependencies, inputs, run, and the outputs it clears or moves aside."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional

from ..context import Ctx


class StageStopped(Exception):
    """A training command stopped early on a signal (its checkpoint is saved); ``code`` is its exit status."""

    def __init__(self, stage: str, code: int) -> None:
        super().__init__(f"stage {stage} stopped (exit {code}); rerun the same command to resume")
        self.stage = stage
        self.code = code

    def __reduce__(self):  # raised in a worker process and again in the study's
        return StageStopped, (self.stage, self.code)


class Stage:
    kind = ""
    training = False  # a training run the study never deletes on its own (moved aside only with --force)

    def __init__(self, study: Optional[str], deps: list[str]) -> None:
        self.study = study
        self.deps = deps
        self.key = f"{study}.{self.kind}" if study else self.kind

    def trains(self, ctx: Ctx) -> bool:
        """Whether the stage trains a model in this config (with ``jobs`` > 1 such stages run side by side)."""
        return self.training

    def inputs(self, ctx: Ctx) -> dict[str, Any]:
        raise NotImplementedError

    def run(self, ctx: Ctx) -> dict[str, Any]:
        raise NotImplementedError

    def clear(self, ctx: Ctx) -> list[Path]:
        """Outputs removed before a run whose inputs differ from the last attempt's."""
        return []

    def reset(self, ctx: Ctx) -> list[Path]:
        """Training run folders moved aside when the stage is forced."""
        return []

    def note(self, ctx: Ctx) -> str:
        """A short remark for --plan (e.g. how far a training run has got)."""
        return ""


def remove_path(path: Path) -> None:
    """Remove a file, a link or a folder tree, if there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
