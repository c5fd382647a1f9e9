"""Atomic file writes, the project's one implementation: write a temporary file beside the target,
fsync it, then ``os.replace`` it into place, so an interrupted run never leaves a half-written
checkpoint, image or result behind (the old file, if any, stays intact)."""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

from runtime.errors import UserError, write_error_message

_UMASK: int | None = None


def _new_file_mode(path: Path) -> int:
    """The mode ``open()`` would give ``path``: an existing file's own, else 0o666 less the umask.

    ``mkstemp`` creates 0o600 files; without this every output would be unreadable to other users.
    """
    global _UMASK
    try:
        st = path.lstat()  # a symbolic link planted in the output folder is replaced, never followed
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    except FileNotFoundError:
        pass
    if _UMASK is None:
        _UMASK = os.umask(0o022)   # read once: os.umask can only be read by setting it
        os.umask(_UMASK)
    return 0o666 & ~_UMASK


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], Any], make_parents: bool = True) -> Path:
    """Call ``write`` on a temporary binary file next to ``path`` and move it into place.

    With ``make_parents=False`` a missing output folder is a one-line :class:`UserError`.
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.parent.is_dir():
        raise UserError(f"{path}: output folder {path.parent} does not exist; create it first")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # a read-only or full folder: name the file the user asked for, not the temporary one
        exc.filename = str(path)
        raise
    try:
        if hasattr(os, "fchmod"):      # not on Windows before Python 3.13
            os.fchmod(fd, _new_file_mode(path))
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # the one-line message names the file
        raise
    return path


def check_writable(path: str | Path) -> Path:
    """Create ``path``'s folder and make sure a file can be written there, before any long work that ends in
    writing ``path``; a folder that cannot be made or written is a one-line :class:`UserError`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        exc.filename = str(path)
        raise UserError(write_error_message(exc)) from None
    return path


def fsync_dir(folder: str | Path) -> None:
    """Make the renames done in ``folder`` durable (where the platform allows it; best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a folder
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse to fsync a folder; the rename itself stands
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(data: bytes, path: str | Path) -> Path:
    return write_atomic(path, lambda fh: fh.write(data))


def write_text_atomic(text: str, path: str | Path) -> Path:
    return write_bytes_atomic(text.encode("utf-8"), path)


def copy_atomic(src: str | Path, dst: str | Path) -> Path:
    """Copy ``src``'s bytes to ``dst`` atomically; a symbolic link at ``dst`` is replaced, never written through."""
    import shutil

    with open(src, "rb") as fh_in:
        return write_atomic(dst, lambda fh: shutil.copyfileobj(fh_in, fh, 1 << 20))


def savefig_atomic(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    fmt = Path(path).suffix.lstrip(".") or "png"
    return write_atomic(path, lambda fh: fig.savefig(fh, format=fmt, **kwargs))
