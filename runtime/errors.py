"""User-facing errors: one line that names the file and the fix, never a deep traceback."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Union


class UserError(Exception):
    """An error caused by input the user controls (files, flags, configs).

    Command-line entry points catch it and print ``error: <message>`` on one line.
    """


def require_file(path: Union[str, Path], what: str = "file", fix: str = "check the path") -> Path:
    """``path`` as a Path if it is a readable regular file; else a one-line :class:`UserError` saying
    whether it is missing, a folder or a broken/looping symbolic link, and ``fix``."""
    path = Path(path)
    try:
        if path.is_dir():
            raise UserError(f"{path}: is a folder, not a {what}; {fix}")
        if not path.is_file():
            if path.is_symlink():
                raise UserError(f"{path}: broken or looping symbolic link, not a {what}; {fix}")
            raise UserError(f"{path}: {what} not found; {fix}")
    except OSError as exc:  # symlink loops, permission problems on the path
        raise UserError(f"{path}: cannot open the {what} ({exc.strerror or type(exc).__name__}); {fix}") from None
    return path


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
