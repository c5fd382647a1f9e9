"""The project's one reader of torch files: ``torch.load(weights_only=True)`` with a small allow-list.

DefFiller's own runs are safetensors + JSON; torch files come from outside (the official GLIGEN-sem release,
Inception weights) or are legacy run files (``last.pt``, ``detector.pt``, ``state_N.pt``), which hold only
tensors, plain containers, numbers and strings: the weights-only unpickler accepts them as they are. The
allow-list adds the OmegaConf classes that the official GLIGEN-sem release pickles in its ``config_dict``.
Anything else (a pickle that would import or call code) is refused with a one-line :class:`UnsafeFileError`; a
corrupt or foreign file gives a one-line :class:`UnreadableFileError`. Both messages name the file and the fix.
"""
from __future__ import annotations

import collections
import pickle
import re
import typing
import warnings
from pathlib import Path
from typing import Any

import torch

from runtime.errors import UserError, require_file

__all__ = ["SAFE_GLOBALS", "UnreadableFileError", "UnsafeFileError", "first_line", "safe_torch_load"]


def _omegaconf_globals() -> list:
    from omegaconf import DictConfig, ListConfig
    from omegaconf import base as oc_base
    from omegaconf import nodes as oc_nodes

    return [DictConfig, ListConfig, oc_base.ContainerMetadata, oc_base.Metadata, oc_nodes.AnyNode,
            oc_nodes.StringNode, oc_nodes.IntegerNode, oc_nodes.FloatNode, oc_nodes.BooleanNode]


SAFE_GLOBALS: list = [*_omegaconf_globals(), typing.Any, collections.defaultdict, collections.OrderedDict,
                      dict, list, tuple, set, int, float, str, bool]


class UnsafeFileError(UserError):
    """A torch file whose unpickling would import or call something outside the allow-list."""


class UnreadableFileError(UserError):
    """A torch file that is missing, truncated, corrupt or not a torch file at all."""


_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, skipping torch's advice to disable the safety check."""
    for line in str(exc).splitlines():
        line = line.strip()
        if line and "weights_only" not in line and "Weights only load failed" not in line:
            return line[:200]
    return type(exc).__name__


def safe_torch_load(path: str | Path, what: str = "checkpoint", fix: str = "",
                    map_location: str | torch.device = "cpu", unsafe_flag: str | None = None,
                    allow_unsafe: bool = False) -> Any:
    """Load ``path`` with the weights-only unpickler and :data:`SAFE_GLOBALS`.

    ``what`` names the kind of file and ``fix`` says what to do about a bad one (both go into the
    error message). ``unsafe_flag`` is the command-line flag that turns on ``allow_unsafe`` in the
    calling command; it is mentioned only when the command has one.
    """
    path = Path(path)
    suffix = f"; {fix}" if fix else ""
    try:
        require_file(path, what, fix or "check the path")
    except UserError as exc:
        raise UnreadableFileError(str(exc)) from None
    if allow_unsafe:
        return torch.load(path, map_location=map_location, weights_only=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols are noise to users
            with torch.serialization.safe_globals(SAFE_GLOBALS):
                return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _GLOBAL_RE.search(str(exc))
        if found:
            opt_in = f", or pass {unsafe_flag} only if you trust it" if unsafe_flag else ""
            raise UnsafeFileError(f"refusing to unpickle {what} {path}: it would import "
                                  f"`{found.group(1)}`, which can run code{suffix or '; do not use this file'}"
                                  f"{opt_in}") from None
        raise UnreadableFileError(f"{path}: not a readable {what} ({first_line(exc)}){suffix}") from None
    except MemoryError:
        raise UnreadableFileError(f"{path}: {what} too large to load into memory{suffix}") from None
    except Exception as exc:  # truncated zip, zero bytes, text, wrong format: many exception types
        detail = "empty or truncated file" if isinstance(exc, EOFError) else first_line(exc)
        raise UnreadableFileError(f"{path}: not a readable {what} ({type(exc).__name__}: {detail})"
                                  f"{suffix}") from None
