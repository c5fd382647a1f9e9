"""SHA-256 digests: of a file's bytes, and of an array's dtype, shape and contents."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Union

import numpy as np


def file_sha256(path: Union[str, Path], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def array_sha256(arr: np.ndarray) -> str:
    """Hex SHA-256 of an array's dtype, shape and values (equal pixels, equal digest, whatever the file)."""
    arr = np.ascontiguousarray(arr)
    h = hashlib.sha256(f"{arr.dtype.str}|{arr.shape}|".encode())
    h.update(arr.tobytes())
    return h.hexdigest()
