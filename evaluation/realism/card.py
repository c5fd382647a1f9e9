"""Writing the realism card: Markdown, CSV, JSON and one picture, each file atomically."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np

from dataset.files import source_stem
from dataset.io import write_json_atomic
from runtime.atomic import savefig_atomic, write_text_atomic

from .build import Stacks
from .data import OVERALL, ImageSet
from .reference import COLUMNS, counted_met, generated_met
from .thresholds import CNR_MIN, COUNTED_RATE, FLOOR_FACTOR, KS_MAX, SPREAD_MIN

FILES = ("realism.md", "realism.csv", "realism.json", "realism.png")
TILES = 4


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _met(ok: Optional[bool]) -> str:
    return "–" if ok is None else ("met" if ok else "**not met**")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _ok(value: float, passes: bool) -> Optional[bool]:
    return passes if value is not None and math.isfinite(value) else None


def _header(card: dict) -> list[str]:
    s, inp = card["settings"], card["inputs"]
    train = f"`{inp['train']}` ({inp['n_train']} images)" if inp["train"] else "– (no memorisation check)"
    return ["# Realism card", "",
            f"- real: `{inp['real']}` ({inp['n_real']} pairs)",
            f"- generated: `{inp['generated']}` ({inp['n_generated']} pairs)",
            f"- train: {train}",
            f"- images compared at {s['size']}x{s['size']} px grey; seed {s['seed']}; "
            f"{card.get('seconds', float('nan')):.1f} s", ""]


def _brightness(c: str, b: dict) -> list[str]:
    return [c, f"{_f(b['real_mean'])} ± {_f(b['real_sd'])}", f"{_f(b['generated_mean'])} ± {_f(b['generated_sd'])}",
            f"{_f(b['ks'])} ({_f(b['ks_p'])})", _f(b["spread_ratio"]), _met(_ok(b["ks"], b["ks"] <= KS_MAX)),
            _met(_ok(b["spread_ratio"], b["spread_ratio"] >= SPREAD_MIN))]


def _cnr(c: str, r: dict) -> list[str]:
    return [c, f"{_f(r['real_mean'])} ({r['real_pairs']})", f"{_f(r['generated_mean'])} ({r['generated_pairs']})",
            _f(r["ratio"]), _met(_ok(r["ratio"], r["ratio"] >= CNR_MIN))]


def _fwd(c: str, r: dict) -> list[str]:
    return [c, f"{_f(r['fwd'], 2)} [{r['n_real']} vs {r['n_generated']}]",
            f"{_f(r['floor'], 2)} ± {_f(r['floor_sd'], 2)} [{r['n_half_a']} vs {r['n_half_b']}]",
            f"{_f(r['same_size'], 2)}{'' if r['paired'] else ' (unpaired)'}", _f(r["ratio"], 2), _met(r["met"])]


def markdown(card: dict) -> str:
    """The readable card: one table per metric family, one row per category."""
    cats, fs = card["categories"], card["settings"]["fwd"]
    lines = _header(card)
    lines += ["## Brightness (per-image mean grey level, 0..1)", "",
              f"Targets: KS <= {KS_MAX}, spread ratio (sd generated / sd real) >= {SPREAD_MIN}.", ""]
    lines += _table(["category", "real mean ± sd", "generated mean ± sd", "KS (p)", "spread ratio", "KS", "spread"],
                    [_brightness(c, card["brightness"][c]) for c in cats])
    lines += ["", "## In-image contrast (pixel standard deviation, 0..1)", ""]
    lines += _table(["category", "real", "generated", "ratio"],
                    [[c, _f(r["real_mean"], 4), _f(r["generated_mean"], 4), _f(r["ratio"])]
                     for c, r in ((c, card["contrast"][c]) for c in cats)])
    lines += ["", "## Mask adherence (CNR of evaluation.mask_adherence)", "", f"Target: CNR >= {CNR_MIN} x real.", ""]
    lines += _table(["category", "real (pairs)", "generated (pairs)", "ratio", "target"],
                    [_cnr(c, card["cnr"][c]) for c in cats])
    lines += ["", "## Fréchet Wavelet Distance (pytorchfwd)", "",
              f"{fs['wavelet']} wavelet packets to level {fs['level']}, grey channel x 3 (= FWD of the images "
              f"replicated to RGB), floor over {fs['draws']} seeded draw(s) of real halves A/B. FWD is biased upwards "
              "at small set sizes: compare the floor FWD(A, B) with the same-size FWD(A, generated from B's masks), "
              f"not with FWD(all real, all generated). Target: same-size FWD <= {FLOOR_FACTOR:g} x floor.", ""]
    lines += _table(["category", "FWD(real, gen) [n vs m]", "floor FWD(A, B) [|A| vs |B|]", "same-size FWD(A, gen B)",
                     "ratio", "target"], [_fwd(c, card["fwd"][c]) for c in cats])
    lines += _memo_lines(card)
    lines += reference_lines(card)
    lines += ["", "## Targets", ""] + _target_lines(card)
    if card["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in card["warnings"]]
    return "\n".join(lines) + "\n"


def _target_lines(card: dict) -> list[str]:
    """The targets table; with a real-sample reference also how often a real sample meets each target, and the
    count over the targets it meets in at least half its draws."""
    counted = counted_met(card)
    if counted is None:
        return _table(["category", "target", "value", "result"],
                      [[t["category"], t["target"], _f(t["value"]), _met(t["met"])] for t in card["targets"]])
    rows = [[t["category"], t["target"], _f(t["value"]), _met(t["met"]),
             "–" if t.get("real_sample_met") is None else _share(t["real_sample_met"])] for t in card["targets"]]
    return _table(["category", "target", "value", "result", "a real sample meets it in"], rows) + [
        "", f"Counted (targets a real sample meets in at least {100 * COUNTED_RATE:.0f} % of its draws, and those "
            f"without a real-sample rate): the generated set meets {counted[0]} of {counted[1]}."]


def _memo_lines(card: dict) -> list[str]:
    if card["memorisation"] is None:
        return []
    lines = ["", "## Memorisation (nearest training image, 1 - correlation at "
             f"{card['settings']['memo_side']} px)", "",
             "Real held-out images give the reference distances; a generated set with many more images closer "
             "than the real 5th percentile than the expected 5 % may copy training images: flagged above 10 % when "
             "that many hits are also unlikely at 5 % (one-sided binomial p < 0.05), since a few images of a "
             "small set move the fraction a lot.", ""]
    return lines + _table(
        ["category", "real median / p5 (n)", "generated median / p5 (n)", "generated < real p5 (p)", "flag"],
        [[c, f"{_f(m['real_median'])} / {_f(m['real_p5'])} ({m['real_n']})",
          f"{_f(m['generated_median'])} / {_f(m['generated_p5'])} ({m['generated_n']})",
          f"{_f(m['fraction_below_real_p5'], 2)} ({_f(m['binomial_p'])})",
          "–" if m["possible_memorisation"] is None else ("**possible memorisation**" if m["possible_memorisation"]
                                                           else "none")]
         for c, m in ((c, card["memorisation"][c]) for c in card["categories"])])


def _share(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{100 * x:.0f} %"


def reference_lines(card: dict) -> list[str]:
    """The card's real-sample reference section: how often random real training sets meet each target."""
    ref = card.get("reference")
    if not ref:
        return []
    return ["", "## What a real sample scores", ""] + real_sample_lines(
        ref, generated_met(card), {c: row["ratio"] for c, row in card["fwd"].items()})


def real_sample_lines(ref: dict, met: Optional[int] = None, generated_fwd: Optional[dict] = None) -> list[str]:
    """Markdown of a real-sample reference (:func:`.build.real_sample_reference`); with ``met`` and
    ``generated_fwd`` also what the generated set scores."""
    lines = []
    t = ref["targets_met"]
    if t:
        lines += [f"{ref['draws']} seeded draws of real training images, as many per category as the scored set has "
                  "(overall: their union), each scored against the real set as a generated set is; per target the "
                  "median value and how often a draw meets it. This is what new real images, i.e. a perfect "
                  "generator, would score at these set sizes.", ""]
        header = ["category", "n (of pool)", f"KS median (<= {KS_MAX} in)",
                  f"spread ratio median (>= {SPREAD_MIN} in)", f"CNR ratio median (>= {CNR_MIN} in)"]
        rows = [[c, f"{r['n']} ({r['pool']})"] + [f"{_f(r[f'{col}_median'], 2)} ({_share(r[f'{col}_met'])})"
                                                   for col in COLUMNS]
                for c, r in ref["rows"].items()]
        lines += _table(header, rows)
        lines += ["", f"Of these {t['of']} targets a real sample meets {t['mean']:.1f} on average (5th-95th "
                      f"percentile {t['p5']:.0f}-{t['p95']:.0f}; all {t['of']} in {_share(t['all_met'])} of draws)"
                      + ("." if met is None else f"; the generated set meets {met}."), ""]
    fwd = ref.get("fwd")
    if not fwd:
        return lines
    draws = max(r["draws"] for r in fwd.values())
    lines += [f"Same-size FWD of {draws} seeded training sets in place of the generated images (the card's real "
              f"halves and floor): the FWD/floor a real sample scores, and how often it is within {FLOOR_FACTOR:g} x "
              "the floor.", ""]
    header = ["category", "real sample FWD/floor median (p5-p95)", f"<= {FLOOR_FACTOR:g} x floor in"]
    rows = [[c, f"{_f(r['median'], 2)} ({_f(r['p5'], 2)}-{_f(r['p95'], 2)})", _share(r["met"])]
            for c, r in fwd.items()]
    if generated_fwd is not None:
        header.append("generated")
        rows = [row + [_f(generated_fwd.get(c), 2)] for row, c in zip(rows, fwd)]
    return lines + _table(header, rows)


def csv_rows(card: dict) -> list[dict]:
    """One row per category x metric: ``category, metric, real, generated, value``."""
    rows = []

    def add(cat: str, metric: str, real: Any = None, generated: Any = None, value: Any = None) -> None:
        rows.append({"category": cat, "metric": metric, "real": real, "generated": generated, "value": value})

    for c in card["categories"]:
        b, k, n, f = card["brightness"][c], card["contrast"][c], card["cnr"][c], card["fwd"][c]
        add(c, "n_images", f["n_real"], f["n_generated"])
        add(c, "brightness_mean", b["real_mean"], b["generated_mean"], b["generated_mean"] - b["real_mean"])
        add(c, "brightness_sd", b["real_sd"], b["generated_sd"], b["spread_ratio"])
        add(c, "brightness_ks", value=b["ks"])
        add(c, "brightness_ks_p", value=b["ks_p"])
        add(c, "contrast", k["real_mean"], k["generated_mean"], k["ratio"])
        add(c, "cnr", n["real_mean"], n["generated_mean"], n["ratio"])
        add(c, "fwd", value=f["fwd"])
        add(c, "fwd_floor", value=f["floor"])
        add(c, "fwd_same_size", value=f["same_size"])
        add(c, "fwd_ratio", value=f["ratio"])
        if card["memorisation"] is not None:
            m = card["memorisation"][c]
            add(c, "memo_median", m["real_median"], m["generated_median"])
            add(c, "memo_p5", m["real_p5"], m["generated_p5"])
            add(c, "memo_fraction_below_real_p5", m["expected_fraction"], m["fraction_below_real_p5"],
                int(bool(m["possible_memorisation"])))
            add(c, "memo_binomial_p", value=m["binomial_p"])
        ref = (card.get("reference") or {}).get("rows", {}).get(c)
        if ref is not None:
            for col in COLUMNS:
                add(c, f"real_sample_{col}_median", value=ref[f"{col}_median"])
                add(c, f"real_sample_{col}_met", value=ref[f"{col}_met"])
        ref_fwd = ((card.get("reference") or {}).get("fwd") or {}).get(c)
        if ref_fwd is not None:
            add(c, "real_sample_fwd_ratio_median", value=ref_fwd["median"])
            add(c, "real_sample_fwd_ratio_met", value=ref_fwd["met"])
    return rows


def csv_text(card: dict) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["category", "metric", "real", "generated", "value"], lineterminator="\n")
    writer.writeheader()
    for row in csv_rows(card):
        writer.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in row.items()})
    return buf.getvalue()


def _examples(real: ImageSet, generated: ImageSet, r_idx: np.ndarray, g_idx: np.ndarray,
              rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Up to :data:`TILES` real images and, where there is one, the generated image of the same mask."""
    by_base = {}
    for i in g_idx:
        by_base.setdefault(source_stem(generated.stems[i]), int(i))
    paired = [int(i) for i in r_idx if real.stems[i] in by_base]
    pool = paired if len(paired) >= TILES else [int(i) for i in r_idx]
    chosen = sorted(rng.choice(pool, size=min(TILES, len(pool)), replace=False).tolist()) if pool else []
    gens = [by_base[real.stems[i]] for i in chosen if real.stems[i] in by_base]
    if len(gens) < min(TILES, len(g_idx)):
        gens = sorted(rng.choice(g_idx, size=min(TILES, len(g_idx)), replace=False).tolist())
    return chosen, gens


def picture(card: dict, real: ImageSet, generated: ImageSet, s: Stacks, seed: int = 0):
    """Per category: brightness histograms real vs generated, then 4 real and 4 generated tiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = [c for c in card["categories"] if c != OVERALL]
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(cats), 1 + 2 * TILES, figsize=(2.0 * (1 + 2 * TILES) + 1.5, 2.2 * len(cats)),
                             gridspec_kw={"width_ratios": [2.2] + [1] * (2 * TILES)}, squeeze=False)
    for row, cat in enumerate(cats):
        r_idx, g_idx = s.real_groups[cat], s.gen_groups[cat]
        ax = axes[row, 0]
        bins = np.linspace(0, 1, 41)
        ax.hist(s.real_x[r_idx].mean(axis=(1, 2)), bins, alpha=0.6, label=f"real ({len(r_idx)})", color="tab:blue")
        ax.hist(s.gen_x[g_idx].mean(axis=(1, 2)), bins, alpha=0.6, label=f"generated ({len(g_idx)})",
                color="tab:orange")
        ax.set_title(f"{cat}: KS {_f(card['brightness'][cat]['ks'], 2)}", fontsize=9)
        ax.set_xlabel("mean grey level", fontsize=8)
        ax.legend(fontsize=7)
        reals, gens = _examples(real, generated, r_idx, g_idx, rng)
        for k in range(2 * TILES):
            tile = axes[row, 1 + k]
            tile.axis("off")
            src, stack, set_ = (reals, s.real_x, real) if k < TILES else (gens, s.gen_x, generated)
            j = k % TILES
            if j < len(src):
                tile.imshow(stack[src[j]], cmap="gray", vmin=0, vmax=1)
                tile.set_title(f"{'real' if k < TILES else 'gen'} {set_.stems[src[j]]}", fontsize=7)
    fig.tight_layout()
    return fig


def jsonable(x: Any) -> Any:
    """``x`` with NaN and infinities as ``None`` (strict JSON)."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_card(card: dict, out: Path, real: ImageSet, generated: ImageSet, s: Stacks, seed: int = 0) -> list[Path]:
    """Render everything first, then write the four files atomically; returns their paths."""
    import matplotlib.pyplot as plt

    md, table = markdown(card), csv_text(card)
    fig = picture(card, real, generated, s, seed)
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / name for name in FILES]
        write_text_atomic(md, paths[0])
        write_text_atomic(table, paths[1])
        write_json_atomic(jsonable(card), paths[2])
        savefig_atomic(fig, paths[3], dpi=100)
    finally:
        plt.close(fig)
    return paths
