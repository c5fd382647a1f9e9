"""The resume rule every trainer shares: a run started again continues from its folder, and a setting that
defines the run (its data, model, seed, schedule) must not change; a change is refused with one line."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from runtime.errors import UserError


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b.c": value}`` of nested mappings (lists stay whole values)."""
    if not isinstance(node, Mapping):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def changed_settings(before: Mapping[str, Any], now: Mapping[str, Any],
                     guarded: Callable[[str], bool]) -> dict[str, list]:
    """``{key: [before, now]}`` of the flattened settings that differ and that ``guarded(key)`` keeps."""
    a, b = flatten(before), flatten(now)
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and guarded(k)}


def refuse_changes(run_dir: str | Path, changes: Mapping[str, list], fix: str, limit: int = 3) -> None:
    """A one-line :class:`UserError` naming the run folder and (up to ``limit``) changed settings, if any."""
    if not changes:
        return
    listed = ", ".join(f"{k} {v[0]!r} -> {v[1]!r}" for k, v in list(changes.items())[:limit])
    more = f" (and {len(changes) - limit} more)" if len(changes) > limit else ""
    raise UserError(f"{run_dir}: resuming with a different {listed}{more}; {fix}")
