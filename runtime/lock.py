"""One writer per run or output folder, the project's one lock: an exclusive ``flock`` on
``<folder>/.deffiller.lock``.

Every command that writes a run or output folder takes it (training, the mask producer, the
detector, the study, the sample filter, predictions, infer.py and the page's keep). The kernel
drops the lock when its process dies (even by SIGKILL), so a lock file left by a dead run is simply
taken over; a child forked while it was held (a data-loader worker) holds it until the child ends too.
The file names the holder (pid and host) for the refusal message. Never delete a held lock file: a
second writer would then lock a new file beside the live one.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path
from typing import Iterator

from runtime.errors import UserError

LOCK_NAME = ".deffiller.lock"
DEFAULT_FIX = "choose another output folder"


def _ended(holder: str) -> str:
    """A note when the named holder ran on this host and has ended: a child it forked (a data-loader
    worker) inherited the lock and still holds it."""
    parts = holder.split()
    if len(parts) != 4 or parts[0] != "pid" or parts[2] != "on" or parts[3] != socket.gethostname():
        return ""
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return ", which has ended; a process it started still holds the lock and usually exits within seconds"
    except (ValueError, OSError):
        pass
    return ""


class FolderLock:
    """``with FolderLock(root):`` or ``acquire()`` / ``release()``; refusal is a one-line UserError.

    ``fix`` ends the refusal message (how to pick another folder in the command at hand);
    ``create=True`` makes ``root`` (and its parents) first.
    """

    def __init__(self, root: str | Path, fix: str = DEFAULT_FIX, create: bool = False) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self.fix, self.create = fix, create
        self.fd: int | None = None

    def _make_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise UserError(f"{self.root}: exists and is not a folder; {self.fix}") from None
        except OSError as exc:
            raise UserError(f"{self.root}: cannot create the output folder ({exc.strerror}); {self.fix}") from None

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise UserError(f"{self.root}: cannot write there ({exc.strerror}); check its permissions "
                            f"or {self.fix}") from None

    def acquire(self) -> FolderLock:
        if self.create:
            self._make_root()
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "unknown process"
                os.close(fd)
                raise UserError(f"{self.root} is being written by another run ({holder}{_ended(holder)}, "
                                f"lock {self.path}); wait for it to finish or {self.fix}") from None
            # the previous holder may have removed the file between our open and flock: retry on the new one
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        except OSError:  # a full disk: the lock still holds, only the holder's name is missing
            pass
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def locked(root: str | Path, fix: str = DEFAULT_FIX, enabled: bool = True) -> Iterator[None]:
    """Create ``root`` and hold its lock for the block (nothing when ``enabled`` is false: other ranks)."""
    if not enabled:
        yield
        return
    with FolderLock(root, fix, create=True):
        yield
