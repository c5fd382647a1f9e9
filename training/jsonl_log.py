"""A run's log, ``RUN/metrics.jsonl``: one JSON object a line, each with the ``iteration`` it was logged at."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from runtime.atomic import write_text_atomic

LOG_NAME = "metrics.jsonl"


class JsonlLog:
    """Append-only lines; lines past a resumed checkpoint are dropped with :meth:`truncate_after`."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOG_NAME

    def append(self, iteration: int, row: Mapping[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"iteration": int(iteration), **row}, default=_number) + "\n")

    def rows(self) -> list[dict[str, Any]]:
        """The readable lines (a line cut short by a kill is skipped)."""
        return read_log(self.path)

    def truncate_after(self, iteration: int) -> None:
        """Drop lines past ``iteration`` (written by a run that was killed before its next save)."""
        if not self.path.is_file():
            return
        kept = [json.dumps(row) for row in self.rows() if int(row["iteration"]) <= iteration]
        write_text_atomic("".join(k + "\n" for k in kept), self.path)

    def replace(self, rows: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
        """Rewrite the log as ``(iteration, row)`` pairs: a resumed run's history is the record."""
        write_text_atomic("".join(json.dumps({"iteration": int(it), **row}, default=_number) + "\n"
                                  for it, row in rows), self.path)


def _number(value: Any) -> Any:
    """NumPy and torch scalars as Python numbers."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` that parse and carry an integer ``iteration`` ([] without the file)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            int(row["iteration"])
        except (ValueError, KeyError, TypeError):
            continue
        rows.append(row)
    return rows
