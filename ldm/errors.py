"""User-facing errors: one line that names the file and the fix, never a deep traceback."""
from __future__ import annotations

import sys
from typing import Callable


class UserError(Exception):
    """An error caused by input the user controls (files, flags, configs).

    Command-line entry points catch it and print ``error: <message>`` on one line.
    """


def run_cli(main: Callable[[], int | None]) -> None:
    """Run ``main`` and turn a :class:`UserError` into a one-line message and exit code 2."""
    try:
        code = main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
