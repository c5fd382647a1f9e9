"""User-facing errors: one line that names the file and the fix, never a deep traceback."""
from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import Callable, Optional, Union


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


#: errors of a write that the user can fix: a full disk or quota, a file-size limit, a read-only or
#: unwritable folder, a path through a file
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                errno.EISDIR}


def space_fix(exc: OSError) -> Optional[str]:
    """What to do about a write that ran out of room (full disk, quota, file-size limit); None for other errors."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free disk space, then rerun the same command to resume"
    if exc.errno == errno.EFBIG:
        return "raise the file-size limit (ulimit -f), then rerun the same command to resume"
    return None


def write_error_message(exc: OSError) -> str:
    """One line for a failed write: the path, the cause and what to do; the atomic writes left no partial file."""
    what = exc.filename or "the output"
    fix = space_fix(exc) or "fix the folder's permissions or choose a writable output folder, then rerun"
    return f"{what}: cannot write ({exc.strerror or exc}); {fix}"


def run_cli(main: Callable[[], int | None]) -> None:
    """Run ``main``; a :class:`UserError` or a write error the user can fix (full disk, read-only folder,
    file-size limit) becomes a one-line message and exit code 2."""
    try:
        code = main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        print(f"error: {write_error_message(exc)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
