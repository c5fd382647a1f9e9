"""Realism cards side by side: one row per generated set, the card's key numbers per category.

    python -m evaluation.realism.compare OUTPUT/val/A/realism OUTPUT/val/B/realism [--labels A B] [--out STEM]
    python -m evaluation.realism.compare C1000 C2000 C3000 --curve 1000 2000 3000 --out STEM
    python -m evaluation.realism.compare A_s0 A_s1 B_s0 B_s1 --groups A=2 B=2 --out STEM

Each argument is a card folder (or its ``realism.json``). Prints a Markdown table; with ``--out``
writes ``STEM.md`` and ``STEM.csv`` atomically, and with ``--curve X...`` (one number per card, e.g.
training iterations) also ``STEM.png``: each column's value per category against X, the target drawn.
With ``--groups NAME=N ...`` (consecutive cards, e.g. one model's generation seeds) a second table
follows: per group the mean, range and spread of the targets met, the mean overall FWD/floor, and each
target met in fewer than all of the group's cards with how many. Cards made with training images also show
the brightness and CNR targets a real sample meets, and how many targets the set meets of those that a real
sample meets in at least half its draws (targets without a real-sample rate, such as memorisation, count).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Optional, Sequence

from runtime.atomic import write_text_atomic
from runtime.errors import UserError, run_cli

from .reference import counted_met, generated_met, target_key
from .thresholds import CNR_MIN, COUNTED_RATE, FLOOR_FACTOR, KS_MAX, SPREAD_MIN

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


def reference_cell(card: dict) -> Optional[str]:
    """``"9/12 vs 10.1"``: the brightness and CNR targets the set meets against a real sample's mean."""
    ref = (card.get("reference") or {}).get("targets_met")
    if not ref:
        return None
    return f"{generated_met(card)}/{ref['of']} vs {ref['mean']:.1f}"


def rows(cards: Sequence[dict], labels: Sequence[str]) -> list[dict]:
    """One flat row per card: ``{"run": label, "<column> <cat>": value, ..., "targets met": "k/n"}``."""
    out, with_ref = [], any(reference_cell(c) for c in cards)
    for card, label in zip(cards, labels):
        row: dict = {"run": label}
        for column, section, key, _ in COLUMNS:
            for cat in card.get("categories", []):
                row[f"{column} {SHORT.get(cat, cat)}"] = card[section].get(cat, {}).get(key)
        k, n = met(card)
        row["targets met"] = f"{k}/{n}"
        if with_ref:
            row[REFERENCE] = reference_cell(card)
            row[COUNTED] = counted_cell(card)
        out.append(row)
    return out


def markdown(cards: Sequence[dict], labels: Sequence[str]) -> str:
    """The comparison as a Markdown table, categories as ``a / b / c`` within each column."""
    cats = cards[0].get("categories", []) if cards else []
    with_ref = any(reference_cell(c) for c in cards)
    head = (["run"] + [f"{c} ({' / '.join(SHORT.get(x, x) for x in cats)})" for c, *_ in COLUMNS] + ["targets met"]
            + [REFERENCE, COUNTED] * with_ref)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for card, label in zip(cards, labels):
        cells = [label]
        for _, section, key, fmt in COLUMNS:
            values = [card[section].get(cat, {}).get(key) for cat in cats]
            cells.append(" / ".join("–" if v is None else fmt.format(v) for v in values))
        k, n = met(card)
        cells.append(f"{k}/{n}")
        if with_ref:
            cells += [reference_cell(card) or "–", counted_cell(card) or "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


TARGET_LINES = {"brightness KS": KS_MAX, "spread ratio": SPREAD_MIN, "CNR ratio": CNR_MIN, "FWD / floor": FLOOR_FACTOR,
                "contrast ratio": 1.0}
REFERENCE = "brightness and CNR targets: this set / a real sample"
COUNTED = f"targets met of those a real sample meets in ≥ {100 * COUNTED_RATE:.0f} % of draws"


def _target_name(t: dict) -> str:
    """``"Sc CNR"``: the category's short name and the target's key."""
    return f"{SHORT.get(t.get('category'), t.get('category'))} {target_key(t)}"


def counted_cell(card: dict) -> Optional[str]:
    """``"16/19"``: the targets met of those a real sample meets in at least half its draws (None without a
    reference)."""
    counted = counted_met(card)
    return None if counted is None else f"{counted[0]}/{counted[1]}"


def group_rows(cards: Sequence[dict], groups: Sequence[tuple[str, int]]) -> list[dict]:
    """Per group of consecutive cards: mean, min, max and sd of the targets met, the mean overall FWD/floor,
    and each target not met in every card of the group as ``"Sc CNR 2/4"`` (a target unmeasured on a card
    counts as not met there)."""
    out, start = [], 0
    for name, n in groups:
        part = cards[start:start + n]
        start += n
        counts = [met(c)[0] for c in part]
        hits: dict[str, int] = {}
        for card in part:
            for t in card.get("targets", []):
                if isinstance(t, dict):
                    hits[_target_name(t)] = hits.get(_target_name(t), 0) + bool(t.get("met"))
        counted = [counted_met(c) for c in part]
        fwd = [c["fwd"].get("overall", {}).get("ratio") for c in part]
        fwd = [float(v) for v in fwd if isinstance(v, (int, float))]
        out.append({"group": name, "cards": len(part), "targets met mean": statistics.mean(counts),
                    "min": min(counts), "max": max(counts),
                    "sd": statistics.stdev(counts) if len(counts) > 1 else 0.0,
                    "of": max(met(c)[1] for c in part),
                    "overall FWD/floor mean": sum(fwd) / len(fwd) if len(fwd) == len(part) else None,
                    "met in fewer than all cards": "; ".join(f"{k} {v}/{len(part)}" for k, v in hits.items()
                                                            if v < len(part)),
                    "counted met mean": (statistics.mean(k for k, _ in counted) if all(counted) else None),
                    "counted of": max(n for _, n in counted) if all(counted) else None})
    return out


def groups_markdown(table: list[dict]) -> str:
    """The group table as Markdown (the counted column where a group's cards all have a real-sample reference)."""
    with_counted = any(r["counted met mean"] is not None for r in table)
    head = ["group", "cards", "targets met: mean (min–max, sd)"] + [f"{COUNTED}, mean"] * with_counted + [
        "overall FWD/floor, mean", "met in fewer than all cards"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        fwd = "–" if r["overall FWD/floor mean"] is None else f"{r['overall FWD/floor mean']:.2f}"
        count = f"{r['targets met mean']:.2f} of {r['of']} ({r['min']}–{r['max']}, {r['sd']:.2f})"
        cells = [r["group"], str(r["cards"]), count]
        if with_counted:
            cells.append("–" if r["counted met mean"] is None else f"{r['counted met mean']:.2f} of {r['counted of']}")
        lines.append("| " + " | ".join(cells + [fwd, r["met in fewer than all cards"] or "–"]) + " |")
    return "\n".join(lines) + "\n"


def parse_groups(specs: Sequence[str], n_cards: int) -> list[tuple[str, int]]:
    """``["A=4", "B=4"]`` -> ``[("A", 4), ("B", 4)]``, their sizes adding up to the number of cards."""
    groups = []
    for spec in specs:
        name, _, size = spec.rpartition("=")
        if not name or not size.isdigit() or int(size) < 1:
            raise UserError(f"--groups {spec!r}: give NAME=N, N the number of consecutive cards in the group")
        groups.append((name, int(size)))
    if sum(n for _, n in groups) != n_cards:
        raise UserError(f"--groups: {sum(n for _, n in groups)} cards in the groups for {n_cards} given; "
                        "the groups must cover every card, in order")
    return groups


def curve(cards: Sequence[dict], xs: Sequence[float], path: Path, xlabel: str = "training iterations") -> Path:
    """Each column's value per category against ``xs``, one panel per column, targets dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from runtime.atomic import savefig_atomic

    cats = cards[0].get("categories", [])
    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(3.2 * len(COLUMNS), 3.0))
    for ax, (column, section, key, _) in zip(axes, COLUMNS):
        for cat in cats:
            ys = [card[section].get(cat, {}).get(key) for card in cards]
            ax.plot(xs, [float("nan") if y is None else y for y in ys], marker="o", label=SHORT.get(cat, cat),
                    linewidth=2.5 if cat == "overall" else 1.2)
        ax.axhline(TARGET_LINES[column], color="grey", linestyle="--", linewidth=1)
        ax.set_title(column, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    savefig_atomic(fig, path, dpi=90)
    plt.close(fig)
    return path


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
    p.add_argument("--curve", type=float, nargs="+", default=None, metavar="X",
                   help="one number per card (e.g. iterations): also draw STEM.png against it (needs --out)")
    p.add_argument("--xlabel", default="training iterations", help="the curve's x axis (default: %(default)s)")
    p.add_argument("--groups", nargs="+", default=None, metavar="NAME=N",
                   help="consecutive cards as groups (e.g. one model's generation seeds): also a table of each "
                        "group's mean targets met (with --out: STEM_groups.md and .csv)")
    args = p.parse_args(argv)
    if args.curve is not None and (args.out is None or len(args.curve) != len(args.cards)):
        raise UserError(f"--curve needs --out and one number per card ({len(args.cards)})")
    if args.labels is not None and len(args.labels) != len(args.cards):
        raise UserError(f"--labels: {len(args.labels)} labels for {len(args.cards)} cards; give one per card")
    groups = parse_groups(args.groups, len(args.cards)) if args.groups else None
    cards = [read_card(c) for c in args.cards]
    labels = args.labels or [Path(c).parent.name if Path(c).name in ("realism", "realism.json") else Path(c).name
                             for c in args.cards]
    text = markdown(cards, labels)
    print(text, end="")
    grouped = group_rows(cards, groups) if groups else None
    if grouped:
        print("\n" + groups_markdown(grouped), end="")
    if args.out is not None:
        write_text_atomic(text, Path(f"{args.out}.md"))
        write_text_atomic(to_csv(rows(cards, labels)), Path(f"{args.out}.csv"))
        if grouped:
            write_text_atomic(groups_markdown(grouped), Path(f"{args.out}_groups.md"))
            write_text_atomic(to_csv(grouped), Path(f"{args.out}_groups.csv"))
        if args.curve is not None:
            curve(cards, args.curve, Path(f"{args.out}.png"), args.xlabel)
    return 0


if __name__ == "__main__":
    run_cli(main)
