"""One command-line vocabulary: the flags every tool shares, spelled and checked the same way.

Each ``add_*`` adds one flag with its canonical snake_case name, the original DefFiller spelling as an
alias where there is one, and a help text. The argparse types reject bad values with argparse's own
one-line ``error:`` (exit code 2).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Callable, Optional


# -- argparse types --------------------------------------------------------------------------------
def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    return _int_at_least(text, 0)


def finite_float(text: str) -> float:
    """A float that is neither NaN nor infinite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


MAX_SIDE = 4096  # pixels a side: the largest image size any option takes (a typo must not eat the memory)


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]."""
    def parse(text: str) -> int:
        value = _int_at_least(text, low)
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {value}")
        return value
    parse.__name__ = f"integer from {low} to {high}"
    return parse


def image_side(text: str) -> int:
    """An image side in pixels: an integer from 1 to :data:`MAX_SIDE`."""
    return int_in(1, MAX_SIDE)(text)


def positive_float(text: str) -> float:
    """A finite float > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


# -- shared flags ----------------------------------------------------------------------------------
def add_config(p: argparse.ArgumentParser, default: Optional[str] = None, help: str = "experiment YAML") -> None:
    """``--config`` (alias ``--yaml_file``, the original DefFiller spelling)."""
    p.add_argument("--config", "--yaml_file", dest="config", type=Path, default=default,
                   help=help + (f" (default: {default})" if default else ""))


def add_data_root(p: argparse.ArgumentParser, default: Optional[str] = None,
                  help: str = "dataset folder with Source_Images/ and Ground_truth/") -> None:
    """``--data_root`` (alias ``--DATA_ROOT``, the original DefFiller spelling)."""
    p.add_argument("--data_root", "--DATA_ROOT", dest="data_root", type=Path, default=default,
                   help=help + (f" (default: {default})" if default else ""))


#: what ``--device`` takes, in every command's help (``runtime.device.pick_device`` reads it)
DEVICE_HELP = "auto (a CUDA GPU when there is one, else the CPU), cpu, cuda, cuda:N or mps"


def add_device(p: argparse.ArgumentParser, default: Optional[str] = "auto", default_text: Optional[str] = None) -> None:
    """``--device`` with :data:`DEVICE_HELP`; ``default_text`` says what a ``None`` default stands for."""
    p.add_argument("--device", default=default, help=f"{DEVICE_HELP} (default: {default_text or default})")


def add_categories(p: argparse.ArgumentParser, aliases: tuple[str, ...] = ()) -> None:
    """``--categories``: the YAML whose top-level ``categories:`` list names the defect categories."""
    p.add_argument("--categories", *aliases, dest="categories", default=None,
                   help="YAML with a top-level categories: list (default: In/Pa/Sc, the SD-Saliency-900 prefixes)")


def add_seed(p: argparse.ArgumentParser, default: int = 0, help: str = "random seed") -> None:
    """``--seed``."""
    p.add_argument("--seed", type=int, default=default, help=f"{help} (default: {default})")


def add_guidance_scale(p: argparse.ArgumentParser, default: float) -> None:
    """``--guidance_scale`` (alias ``--guidance``): classifier-free guidance weight (generators pass
    ``ldm.diffusion.guidance.DEFAULT_GUIDANCE_SCALE``)."""
    p.add_argument("--guidance_scale", "--guidance", dest="guidance_scale", type=finite_float, default=default,
                   help=f"classifier-free guidance scale; 1 = none (default: {default})")


def add_threads(p: argparse.ArgumentParser, default: Optional[int] = 0, default_text: Optional[str] = None,
                note: str = "") -> None:
    """``--threads``: CPU threads for torch (0 = torch's default; negatives refused); ``default_text`` says what a
    ``None`` default stands for, ``note`` is advice added to the help."""
    p.add_argument("--threads", type=non_negative_int, default=default,
                   help=f"CPU threads for torch; 0 = torch's default, all cores{note} "
                        f"(default: {default_text if default_text is not None else default})")
