"""Helpers for ``trainer.py``: options, data streams, checkpoints, EMA, grids; and the run format every trainer
shares (``run_folder``, ``weights_file``, ``state_file``, ``tensor_tree``, ``jsonl_log``, ``resume_rule``).

``trainer.py`` reads top to bottom (data -> conditioning -> model -> loss -> step -> logging and
checkpoints); the pieces that would interrupt that reading live here.
"""
