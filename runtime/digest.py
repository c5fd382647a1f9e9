"""SHA-256 digests and fingerprints: every hash the commands record or compare.

A *digest* hashes content: a file's bytes, an array's dtype, shape and values, a JSON value. A *fingerprint*
hashes what ``stat`` says of files (names, sizes, modification times), a cheap stand-in for content that
changes whenever a file is rewritten. Fingerprints are built from :func:`stat_line` lines, so the study's
stamps hash files in one way. The dataset a study reads (:func:`folders_digest`) and a detector run's training
pairs (:func:`content_line`) are identified by content, so a copy of them with new modification times is the
same data.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

import numpy as np

PathLike = Union[str, Path]


def file_sha256(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=1 << 16)
def _file_sha256_of(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def file_sha256_cached(path: PathLike) -> str:
    """:func:`file_sha256`, computed once per process while the file keeps its size and modification time."""
    path = Path(path).resolve()
    st = path.stat()
    return _file_sha256_of(str(path), st.st_size, st.st_mtime_ns)


def file_sha256_or_none(path: PathLike) -> Optional[str]:
    """:func:`file_sha256` of a file; None when there is no such file."""
    return file_sha256(path) if Path(path).is_file() else None


def yaml_values_sha256_or_none(path: PathLike) -> Optional[str]:
    """:func:`json_sha256` of a YAML file's values (comments, layout and key order do not count); the
    file's :func:`file_sha256` when it is not valid YAML; None when there is no such file."""
    import yaml

    if not Path(path).is_file():
        return None
    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return file_sha256(path)
    return json_sha256(values)


def array_sha256(arr: np.ndarray) -> str:
    """Hex SHA-256 of an array's dtype, shape and values (equal pixels, equal digest, whatever the file)."""
    arr = np.ascontiguousarray(arr)
    h = hashlib.sha256(f"{arr.dtype.str}|{arr.shape}|".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def json_sha256(obj: Any) -> str:
    """Hex SHA-256 of ``obj`` as canonical JSON (sorted keys, no spaces; paths and other objects as strings)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def lines_sha256(lines: Iterable[str], head: str = "") -> str:
    """Hex SHA-256 of ``head`` followed by ``lines``."""
    h = hashlib.sha256(head.encode())
    for line in lines:
        h.update(line.encode())
    return h.hexdigest()


def file_stat(path: PathLike) -> Optional[list[int]]:
    """``[size, mtime_ns]`` of a file; None when it does not exist."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def content_line(label: str, *paths: PathLike) -> str:
    """``<label>|<sha256>|...`` (one SHA-256 per path) and a newline: the files' line of a content digest."""
    return "|".join([label, *(file_sha256_cached(p) for p in paths)]) + "\n"


def stat_line(label: str, path: PathLike) -> str:
    """``<label>|<size>|<mtime_ns>`` and a newline: one file's line of a fingerprint."""
    st = Path(path).stat()
    return f"{label}|{st.st_size}|{st.st_mtime_ns}\n"


def path_fingerprint(path: PathLike) -> Optional[str]:
    """Fingerprint of a file (its size and modification time) or of every file under a folder (their paths
    relative to it, sizes and modification times); None when ``path`` is missing."""
    path = Path(path)
    if path.is_file():
        return json_sha256(file_stat(path))
    if not path.is_dir():
        return None
    return lines_sha256(stat_line(str(item.relative_to(path)), item)
                        for item in sorted(path.rglob("*")) if item.is_file())


def folders_digest(folders: Iterable[PathLike]) -> str:
    """Digest of the files directly in ``folders`` (dotfiles left out): each folder's name, then each file's
    name and :func:`file_sha256`. It survives a copy that gives the files new
    modification times, or a move of the folders elsewhere."""
    def lines() -> Iterator[str]:
        for folder in map(Path, folders):
            yield f"{folder.name}\n"
            if folder.is_dir():
                yield from (f"{item.name}\t{file_sha256(item)}\n" for item in sorted(folder.iterdir())
                            if item.is_file() and not item.name.startswith("."))

    return lines_sha256(lines())
