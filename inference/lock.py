"""One writer per output folder: an exclusive ``flock`` on ``<folder>/.generation.lock``.

The kernel drops the lock when its process dies (even by SIGKILL), so a lock file left by a dead
run is simply taken over. The file names the holder (pid and host) for the refusal message.
"""
from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from runtime.errors import UserError

LOCK_NAME = ".generation.lock"


class FolderLock:
    """``with FolderLock(root):`` or ``acquire()`` / ``release()``; refusal is a one-line UserError."""

    def __init__(self, root: str | Path) -> None:
        self.path = Path(root) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> FolderLock:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise UserError(f"{self.path.parent}: cannot write there ({exc.strerror}); check its permissions "
                                "or choose another --folder / --save_folder_name") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "unknown process"
                os.close(fd)
                raise UserError(f"{self.path.parent} is being written by another run ({holder}, lock {self.path}); "
                                "wait for it to finish or choose another --save_folder_name") from None
            # the previous holder may have removed the file between our open and flock: retry on the new one
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
