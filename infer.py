#!/usr/bin/env python
"""Generate a paired defect dataset from a folder of masks (see ``python infer.py --help``).

The command lives in :mod:`inference.cli` (installed as ``deffiller-infer``).
"""
from inference.cli import entry_point, main

__all__ = ["main"]

if __name__ == "__main__":
    entry_point()
