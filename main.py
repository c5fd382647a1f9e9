#!/usr/bin/env python
"""Train DefFiller: ``python main.py --name exp`` (see ``python main.py --help``).

The command lives in :mod:`training.cli` (installed as ``deffiller-train``); the loop in
:mod:`training.trainer`.
"""
from training.cli import entry_point, main

__all__ = ["main"]

if __name__ == "__main__":
    entry_point()
