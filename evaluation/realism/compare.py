"""Realism cards side by side: one row per generated set, the card's key numbers per category.

    python -m evaluation.realism.compare OUTPUT/val/A/realism OUTPUT/val/B/realism [--labels A B] [--out STEM]

Each argument is a card folder (or its ``realism.json``). Prints a Markdown table; with ``--out``
writes ``STEM.md`` and ``STEM.csv`` atomically.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

from runtime.atomic import write_text_atomic
from runtime.errors import UserError, run_cli

SHORT = {"inclusion": "In", "patches": "Pa", "scratches": "Sc", "overall": "all"}
# (column, card section, field, format)
COLUMNS = (("brightness KS", "brightness", "ks", "{:.2f}"),
           ("spread ratio", "brightness", "spread_ratio", "{:.2f}"),
           ("contrast ratio", "contrast", "ratio", "{:.2f}"),
           ("CNR ratio", "cnr", "ratio", "{:.2f}"),
           ("FWD / floor", "fwd", "ratio", "{:.2f}"))


def read_card(path: str | Path) -> dict:
    """A card's ``realism.json`` (given the file or its folder), or a one-line error."""
    path = Path(path)
    file = path / "realism.json" if path.is_dir() else path
    try:
        card = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{file}: no realism card there; make one with python -m evaluation.realism") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{file}: not a readable realism card ({type(exc).__name__}); make it again") from None
    if not isinstance(card, dict) or not all(isinstance(card.get(s), dict) for _, s, _, _ in COLUMNS):
        raise UserError(f"{file}: not a realism card (missing sections); make it again")
    return card


def met(card: dict) -> tuple[int, int]:
    """Targets met and targets checked on the card."""
    targets = [t for t in card.get("targets", []) if isinstance(t, dict)]
    return sum(bool(t.get("met")) for t in targets), len(targets)


def rows(cards: Sequence[dict], labels: Sequence[str]) -> list[dict]:
    """One flat row per card: ``{"run": label, "<column> <cat>": value, ..., "targets met": "k/n"}``."""
    out = []
    for card, label in zip(cards, labels):
        row: dict = {"run": label}
        for column, section, key, _ in COLUMNS:
            for cat in card.get("categories", []):
                row[f"{column} {SHORT.get(cat, cat)}"] = card[section].get(cat, {}).get(key)
        k, n = met(card)
        row["targets met"] = f"{k}/{n}"
        out.append(row)
    return out


def markdown(cards: Sequence[dict], labels: Sequence[str]) -> str:
    """The comparison as a Markdown table, categories as ``a / b / c`` within each column."""
    cats = cards[0].get("categories", []) if cards else []
    head = ["run"] + [f"{c} ({' / '.join(SHORT.get(x, x) for x in cats)})" for c, *_ in COLUMNS] + ["targets met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for card, label in zip(cards, labels):
        cells = [label]
        for _, section, key, fmt in COLUMNS:
            values = [card[section].get(cat, {}).get(key) for cat in cats]
            cells.append(" / ".join("–" if v is None else fmt.format(v) for v in values))
        k, n = met(card)
        cells.append(f"{k}/{n}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(table: list[dict]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(table[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return buffer.getvalue()


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cards", nargs="+", help="realism card folders (or realism.json files)")
    p.add_argument("--labels", nargs="+", default=None, help="one row label per card (default: the folder names)")
    p.add_argument("--out", type=Path, default=None, help="write STEM.md and STEM.csv")
    args = p.parse_args(argv)
    if args.labels is not None and len(args.labels) != len(args.cards):
        raise UserError(f"--labels: {len(args.labels)} labels for {len(args.cards)} cards; give one per card")
    cards = [read_card(c) for c in args.cards]
    labels = args.labels or [Path(c).parent.name if Path(c).name in ("realism", "realism.json") else Path(c).name
                             for c in args.cards]
    text = markdown(cards, labels)
    print(text, end="")
    if args.out is not None:
        write_text_atomic(text, Path(f"{args.out}.md"))
        write_text_atomic(to_csv(rows(cards, labels)), Path(f"{args.out}.csv"))
    return 0


if __name__ == "__main__":
    run_cli(main)
