"""The gpu_check report: ``results.json`` (every figure) and ``report.md`` (the same as tables)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from runtime.atomic import write_text_atomic


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value[:8]) + (" …" if len(value) > 8 else "")
    if value is None:
        return "–"
    return str(value)


def table(rows: list[Mapping[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return ""
    columns = columns or [k for k in rows[0] if not isinstance(rows[0][k], dict)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _section_md(key: str, title: str, res: Mapping[str, Any]) -> list[str]:
    status = res.get("status", "not run")
    out = [f"## {title}", "", f"**{status.upper()}** ({res.get('seconds', 0):.1f} s)"]
    if res.get("error"):
        where = f" (traceback: `{res['traceback']}`)" if res.get("traceback") else ""
        out += ["", f"error: `{res['error']}`{where}"]
    figures = res.get("figures") or {}
    scalars = {k: v for k, v in figures.items() if not isinstance(v, (list, dict)) or
               (isinstance(v, list) and v and not isinstance(v[0], dict))}
    if figures.get("summary"):
        out += ["", *[f"- {line}" for line in figures["summary"]]]
    if scalars:
        out += ["", *[f"- {k}: {_cell(v)}" for k, v in scalars.items() if k not in ("ok", "summary")]]
    for name, value in figures.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            out += ["", f"{name}:", "", table(value)]
        elif isinstance(value, dict) and name != "summary":
            out += ["", f"- {name}: " + ", ".join(f"{k} {_cell(v)}" for k, v in value.items())]
    return out + [""]


def write_report(out: Path, meta: Mapping[str, Any], titles: Mapping[str, str],
                 results: Mapping[str, Mapping[str, Any]]) -> tuple[Path, Path]:
    """Write ``results.json`` and ``report.md`` under ``out`` (atomically); returns both paths."""
    out.mkdir(parents=True, exist_ok=True)
    data = {"meta": dict(meta), "sections": {k: dict(v) for k, v in results.items()}}
    json_path = write_text_atomic(json.dumps(data, indent=2, default=str) + "\n", out / "results.json")
    passed = [k for k, v in results.items() if v.get("status") == "pass"]
    lines = ["# DefFiller GPU check", "",
             " | ".join(f"{k}: {_cell(v)}" for k, v in meta.items()), "",
             f"Sections passed: {len(passed)} of {len(results)}"
             + ("" if len(passed) == len(results) else
                " — failed: " + ", ".join(k for k in results if k not in passed)), ""]
    for key, res in results.items():
        lines += _section_md(key, titles[key], res)
    md_path = write_text_atomic("\n".join(lines), out / "report.md")
    return json_path, md_path
