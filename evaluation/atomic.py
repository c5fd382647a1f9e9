"""Atomic writes for results and checkpoints: write a temporary file beside the target, then
``os.replace`` it, so an interrupted run never leaves a half-written file behind."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, IO


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_text_atomic(text: str, path: str | Path) -> Path:
    return write_atomic(path, lambda fh: fh.write(text.encode("utf-8")))


def torch_save_atomic(obj: Any, path: str | Path) -> Path:
    import torch

    return write_atomic(path, lambda fh: torch.save(obj, fh))


def savefig_atomic(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    fmt = Path(path).suffix.lstrip(".") or "png"
    return write_atomic(path, lambda fh: fig.savefig(fh, format=fmt, **kwargs))
