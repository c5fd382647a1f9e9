"""Helpers for ``trainer.py``: options, data streams, checkpoints, EMA, grids.

``trainer.py`` reads top to bottom (data -> conditioning -> model -> loss -> step -> logging and
checkpoints); the pieces that would interrupt that reading live here.
"""
