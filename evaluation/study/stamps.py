"""Stage stamps: a finished stage writes ``<out>/.stamps/<stage>.json`` atomically.

A stamp holds the hash of the stage's inputs (its config subset, the files it reads and the digests of
the stamps it depends on), the stage's outputs and a ``digest`` of those outputs (their values and the
fingerprints of the files they list, :mod:`runtime.digest`; a forced stage adds a random part). A stage
is up to date when its stamp's hash equals the hash of its current inputs and its upstream stages are up
to date; a rebuilt stage whose outputs changed gets a new digest, which makes everything downstream
stale, while one that found nothing to do (a finished training run) leaves its dependents alone. ``<stage>.started``
records the input hash of an attempt that has not finished yet (so outputs of an attempt with other
inputs can be cleared before a resume), and ``stage_times.json`` the wall time of every attempt.

Paths inside the repository are stamped relative to it (``$REPO/...``, :func:`portable`) and read back
under the current checkout (:func:`local`), so a study folder moved to another checkout with its
modification times kept (``mv``, ``cp -a``) is still up to date there.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from dataset.io import write_json_atomic
from runtime.configs import REPO
from runtime.digest import json_sha256, path_fingerprint

REPO_TOKEN = "$REPO"


def portable(value: Any) -> Any:
    """``value`` with every string that is a path inside the repository written as ``$REPO/<relative path>``."""
    if isinstance(value, str):
        root = str(REPO)
        if value == root:
            return REPO_TOKEN
        return REPO_TOKEN + value[len(root):] if value.startswith(root + os.sep) else value
    if isinstance(value, Mapping):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v) for v in value]
    return value


def local(value: Any) -> Any:
    """The inverse of :func:`portable` under this checkout."""
    if isinstance(value, str):
        if value == REPO_TOKEN:
            return str(REPO)
        return str(REPO) + value[len(REPO_TOKEN):] if value.startswith(REPO_TOKEN + "/") else value
    if isinstance(value, Mapping):
        return {k: local(v) for k, v in value.items()}
    if isinstance(value, list):
        return [local(v) for v in value]
    return value


def input_hash(inputs: Mapping[str, Any]) -> str:
    """The hash a stamp records for a stage's inputs (paths inside the repository relative to it)."""
    return json_sha256(portable(dict(inputs)))


def hash_matches(recorded: Optional[str], inputs: Mapping[str, Any]) -> bool:
    """Whether a recorded input hash is that of ``inputs``; stamps written before paths were made portable
    hashed the absolute paths and still match in the checkout that wrote them."""
    return recorded is not None and recorded in (input_hash(inputs), json_sha256(dict(inputs)))


def outputs_digest(outputs: Mapping[str, Any], forced: bool = False) -> str:
    """The digest of a stage's completion: its outputs and the fingerprints of the paths they list."""
    files = {portable(str(p)): path_fingerprint(p) for p in outputs.get("paths", [])}
    return json_sha256({"outputs": portable(dict(outputs)), "files": files,
                        "forced": uuid.uuid4().hex if forced else None})


class StampStore:
    """The stamps of one study output folder."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.dir = self.out / ".stamps"

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def read(self, key: str) -> Optional[dict[str, Any]]:
        path = self.path(key)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return local(data) if isinstance(data, dict) and "hash" in data and "digest" in data else None

    def write(self, key: str, input_hash: str, inputs: Mapping[str, Any], outputs: Mapping[str, Any],
              seconds: float, forced: bool = False) -> dict[str, Any]:
        self.dir.mkdir(parents=True, exist_ok=True)
        stamp = {"stage": key, "hash": input_hash, "digest": outputs_digest(outputs, forced),
                 "inputs": portable(dict(inputs)), "outputs": portable(dict(outputs)),
                 "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(float(seconds), 3)}
        write_json_atomic(stamp, self.path(key))
        self.started_path(key).unlink(missing_ok=True)
        return stamp

    def remove(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    # -- unfinished attempts ---------------------------------------------------------------------
    def started_path(self, key: str) -> Path:
        return self.dir / f"{key}.started.json"

    def started_hash(self, key: str) -> Optional[str]:
        try:
            return json.loads(self.started_path(key).read_text()).get("hash")
        except (OSError, ValueError, AttributeError):
            return None

    def mark_started(self, key: str, input_hash: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic({"stage": key, "hash": input_hash, "started": time.strftime("%Y-%m-%d %H:%M:%S")},
                          self.started_path(key))

    # -- wall times ------------------------------------------------------------------------------
    @property
    def times_path(self) -> Path:
        return self.out / "stage_times.json"

    def times(self) -> dict[str, Any]:
        try:
            data = json.loads(self.times_path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def record_time(self, key: str, seconds: float, status: str, beside: Sequence[str] = ()) -> None:
        """Add one attempt of ``key`` (``finished``, ``interrupted`` or ``failed``) to stage_times.json;
        ``beside``: the stages that ran at the same time in other processes."""
        times = self.times()
        entry = times.get(key) or {"attempts": []}
        attempt = {"seconds": round(float(seconds), 3), "status": status, "at": time.strftime("%Y-%m-%d %H:%M:%S")}
        if beside:
            attempt["beside"] = list(beside)
        entry["attempts"] = list(entry.get("attempts", [])) + [attempt]
        entry["total_seconds"] = round(sum(a["seconds"] for a in entry["attempts"]), 3)
        if status == "finished":
            entry["seconds"] = round(float(seconds), 3)
            entry["beside"] = list(beside)
        times[key] = entry
        self.out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(times, self.times_path)
