"""Results tables (Markdown + CSV) and bar charts in the layout of the paper's Tables 5/8 and Fig. 7."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Mapping, Sequence

from metrics.sod import HIGHER_IS_BETTER, TITLES
from runtime.atomic import savefig_atomic, write_text_atomic

PAPER_METRICS = ("S", "MAE", "E_max", "F_max")


def _fmt(value, digits: int) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "" if value is None else str(value)


def markdown_table(rows: Sequence[Mapping], columns: Sequence[str], titles: Mapping[str, str] | None = None,
                   digits: int = 4, bold_best: Sequence[str] = ()) -> str:
    """A GitHub Markdown table; the best value of each column in ``bold_best`` is bolded."""
    titles = {**TITLES, **(titles or {})}
    best = {}
    for col in bold_best:
        values = [r[col] for r in rows if isinstance(r.get(col), float)]
        if len(values) > 1:
            best[col] = max(values) if HIGHER_IS_BETTER.get(col, True) else min(values)
    head = []
    for c in columns:
        arrow = ""
        if c in HIGHER_IS_BETTER:
            arrow = " ↑" if HIGHER_IS_BETTER[c] else " ↓"
        head.append(titles.get(c, c) + arrow)
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"]
    for row in rows:
        cells = []
        for c in columns:
            text = _fmt(row.get(c), digits)
            if c in best and row.get(c) == best[c]:
                text = f"**{text}**"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[Mapping], columns: Sequence[str], digits: int = 6) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_fmt(row.get(c), digits) for c in columns])
    return buf.getvalue()


def write_tables(rows: Sequence[Mapping], columns: Sequence[str], stem: str | Path, title: str = "",
                 note: str = "", bold_best: Sequence[str] = PAPER_METRICS) -> tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.csv`` atomically; returns both paths."""
    stem = Path(stem)
    md = (f"## {title}\n\n" if title else "") + markdown_table(rows, columns, bold_best=bold_best)
    if note:
        md += f"\n{note}\n"
    md_path = write_text_atomic(md, stem.with_suffix(".md"))
    csv_path = write_text_atomic(csv_text(rows, columns), stem.with_suffix(".csv"))
    return md_path, csv_path


def _error(value) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0


def bar_chart(rows: Sequence[Mapping], label_key: str, path: str | Path,
              metrics: Sequence[str] = PAPER_METRICS, group_key: str | None = None,
              title: str = "", error_suffix: str | None = None) -> Path:
    """One panel per metric, one bar per row (coloured by ``group_key`` when given); with ``error_suffix``
    each bar gets an error bar of ``row[metric + error_suffix]`` (e.g. ``"_std"``) where that is a number."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [str(r[label_key]) for r in rows]
    groups = [str(r[group_key]) for r in rows] if group_key else [""] * len(rows)
    palette = plt.get_cmap("tab10")
    colour_of = {g: palette(i % 10) for i, g in enumerate(dict.fromkeys(groups))}
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        values = [float(r[metric]) for r in rows]
        errors = [_error(r.get(metric + error_suffix)) for r in rows] if error_suffix else None
        bars = ax.bar(range(len(rows)), values, color=[colour_of[g] for g in groups], yerr=errors,
                      capsize=3 if errors else 0)
        ax.set_title(TITLES.get(metric, metric) + (" ↑" if HIGHER_IS_BETTER.get(metric, True) else " ↓"))
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        for bar, v in zip(bars, values):
            ax.annotate(f"{v:.3f}", (bar.get_x() + bar.get_width() / 2, v), ha="center",
                        va="bottom", fontsize=7)
        top = max(values) if values else 1.0
        if HIGHER_IS_BETTER.get(metric, True):
            low = min(values) if values else 0.0
            ax.set_ylim(max(0.0, low - 0.15 * max(top - low, 0.05)), min(1.05, top + 0.08))
        else:
            ax.set_ylim(0, top * 1.25 if top > 0 else 1.0)
        ax.grid(axis="y", alpha=0.3)
    if group_key and len(colour_of) > 1:
        handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colour_of.values()]
        fig.legend(handles, list(colour_of), loc="upper right", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = savefig_atomic(fig, path, dpi=120)
    plt.close(fig)
    return out
