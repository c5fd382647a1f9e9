#!/usr/bin/env python
"""A local web page for DefFiller (see ``python app.py --help``).

The command lives in :mod:`webapp.app` (installed as ``deffiller-app``).
"""
from webapp.app import entry_point, main

__all__ = ["main"]

if __name__ == "__main__":
    entry_point()
