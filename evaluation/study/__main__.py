from runtime.errors import run_cli

from . import main

if __name__ == "__main__":
    run_cli(main)
