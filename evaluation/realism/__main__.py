"""``python -m evaluation.realism``: see :mod:`evaluation.realism`."""
from runtime.errors import run_cli

from .cli import main

if __name__ == "__main__":
    run_cli(main)
