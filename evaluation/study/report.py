"""The study report (``<out>/report/``): Table 5 / Table 8 layouts with mean ± std over seeds beside the paper's
numbers, a bar chart, picture grids, fidelity figures, stage wall times and the three targets.

The paper's figures and the ratios they imply are read at report time from the shared folder
(:func:`paper_tables_path`) and printed under each table; where the file is absent the report says so.
Each setting is compared with ``real`` per detector seed (:mod:`evaluation.paired`: the paired S differences,
their mean and std, a bootstrap interval over test images), and the targets are judged on those differences.

Files: ``report.md``, ``table5.csv`` / ``table8.csv`` (mean, std and seeds per metric),
``detector_runs.csv`` (every seed), ``fidelity.csv``, ``stage_times.csv``, ``targets.json``,
``detectors.png`` and ``grid_<study>_<category>.png``.
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from dataset.io import write_json_atomic
from dataset.pairs import find_pairs
from metrics.fid import fid_kid_lines
from metrics.sod import HIGHER_IS_BETTER, METRICS, TITLES
from runtime.atomic import write_text_atomic
from runtime.configs import REPO
from runtime.errors import UserError

from ..paired import paired_differences, paired_markdown
from ..pictures import picture_grid
from ..report import PAPER_METRICS, bar_chart, csv_text
from .config import enabled_studies
from .context import KINDS, Ctx, seconds_text
from .fidelity import OVERALL
from .stages.generation import plain_setting

TABLE = {"substitution": 5, "expansion": 8}
#: the paper's generation_method of the rows our settings compare with (real-only baseline, DefFiller)
PAPER_BASE = {"substitution": "none (real)", "expansion": "none (real 150)"}
PAPER_OURS = "DefFiller"
BASELINE = "real"
#: the expansion settings whose S gain over ``real`` is a target (plain, and real pairs at a fixed batch share)
EXPANSION_TARGETS = ("real+generated", "real+generated fair")


# -- numbers ---------------------------------------------------------------------------------------
def aggregate(rows: Sequence[dict]) -> list[dict]:
    """Detector rows of every seed -> one row per setting with ``<metric>``, ``<metric>_std`` and ``seeds``."""
    out: dict[str, dict] = {}
    for row in rows:
        entry = out.setdefault(row["setting"], {"setting": row["setting"], "train_data": row["train_data"],
                                                "n_train": row["n_train"], "n_test": row["n_test"], "values": {}})
        for m in METRICS:
            entry["values"].setdefault(m, []).append(float(row[m]))
    result = []
    for entry in out.values():
        values = entry.pop("values")
        entry["seeds"] = len(values["S"])
        for m, v in values.items():
            entry[m] = float(np.mean(v))
            entry[f"{m}_std"] = float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")
        result.append(entry)
    return result


def _num(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(float(value)) else None


def _pm(mean: float, std: float, digits: int = 4) -> str:
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def study_paired(results: dict) -> list[dict]:
    """The protocol's paired differences against ``real``; for results written before they were stored, the
    per-seed differences recomputed from the rows (no interval over test images)."""
    if results.get("paired") is not None:
        return results["paired"]
    return paired_differences(results["rows"], BASELINE)


def _interval(p: dict) -> str:
    if not p.get("n_images") or _num(p.get("ci_low")) is None:
        return "no interval over test images (per-image S not stored)"
    return (f"bootstrap 95 % over {p['n_images']} test images [{p['ci_low']:+.4f}, {p['ci_high']:+.4f}]")


def targets(cfg: dict, agg: dict[str, list[dict]], fidelity: dict[str, dict],
            runs: Optional[dict[str, list[dict]]] = None,
            paired: Optional[dict[str, list[dict]]] = None) -> list[dict]:
    """The three targets, each ``{target, value, threshold, met (True/False/None), detail}``; the detector targets
    are judged per detector seed (``runs``: every seed's rows, ``paired``: :func:`study_paired` per study)."""
    t = cfg["targets"]
    out = []
    runs, paired = runs or {}, paired or {}
    sub = {r["setting"]: r for r in agg.get("substitution", [])}
    if "real" in sub and "generated" in sub:
        ratio = t["substitution_s_ratio"]
        s = {(r["detector"], r["setting"]): float(r["S"]) for r in runs.get("substitution", [])}
        # one paired ratio per detector seed x generation seed (each generated setting against the same seed's real)
        per = {(d, st): s[d, st] / s[d, "real"] for d, st in s if plain_setting(st) == "generated"
               and s.get((d, "real"), 0) > 0}
        values = np.array(list(per.values())) if per else np.array([sub["generated"]["S"] / sub["real"]["S"]])
        value = float(values.mean())
        gen_names = [st for st in sub if plain_setting(st) == "generated"]
        units = "detector seed" + (" x generation seed" if len(gen_names) > 1 else "")
        detail = ("; ".join(f"S {st} {_pm(sub[st]['S'], sub[st]['S_std'])}" for st in gen_names)
                  + f" vs real {_pm(sub['real']['S'], sub['real']['S_std'])}; paired ratio per {units} "
                  + (", ".join(f"{d}{st[len('generated'):]} {v:.3f}" for (d, st), v in per.items()) or "–")
                  + f", mean {value:.3f}" + (f" ± {values.std(ddof=1):.3f}" if values.size > 1 else ""))
        for diff in (p for p in paired.get("substitution", []) if plain_setting(p["setting"]) == "generated"):
            detail += f"; {diff['setting']} − real {_pm(diff['mean'], diff['std'])}, {_interval(diff)}"
        out.append({"target": f"substitution: generated-only detector S >= {ratio:g} x real-trained (paired per "
                              f"{units})",
                    "value": value, "threshold": ratio, "met": bool(value >= ratio), "detail": detail})
    for p in paired.get("expansion", []):
        if plain_setting(p["setting"]) not in EXPANSION_TARGETS:
            continue
        spread = _num(p["std"])
        met = bool(p["mean"] > spread) if spread is not None else None
        per = ", ".join(f"{d} {v:+.4f}" for d, v in p["per_seed"].items())
        detail = (f"S {p['setting']} - real per seed: {per}; mean {p['mean']:+.4f}, "
                  + (f"spread (std over {p['seeds']} seeds) {spread:.4f}" if spread is not None
                     else "not evaluable: one seed gives no spread") + f"; {_interval(p)}")
        fair = " (real pairs at a fixed share of every batch)" if p["setting"].endswith("fair") else ""
        out.append({"target": f"expansion{fair}: {p['setting']} beats real in S by more than the seeds' spread "
                              "(paired per seed: mean difference > its std)",
                    "value": p["mean"], "threshold": spread, "met": met, "detail": detail})
    for study in ("substitution", "expansion"):
        fid = fidelity.get(study)
        if not fid:
            continue
        overall = fid["iou"]["per_category"].get(OVERALL) or {}
        g, r = overall.get("generated"), overall.get("real_test")
        if not g or not r:
            continue
        need = t["iou_ratio"] * r["mean"]
        out.append({"target": f"{study}: detector IoU on generated >= {t['iou_ratio']:g} x on real test images",
                    "value": g["mean"], "threshold": need, "met": g["mean"] >= need,
                    "detail": f"IoU generated {_pm(g['mean'], g['std'], 3)} vs real test {_pm(r['mean'], r['std'], 3)} "
                              f"(x{t['iou_ratio']:g} = {need:.3f}; detectors trained on the real training split)"})
    return out


# -- the paper's figures ---------------------------------------------------------------------------
def paper_tables_path() -> Path:
    """``$DEFFILLER_SHARED/paper/deffiller_tables.csv`` (default: ``shared/`` beside the repository)."""
    return Path(os.environ.get("DEFFILLER_SHARED") or REPO.parent / "shared") / "paper" / "deffiller_tables.csv"


def read_paper_tables(path: Path) -> Optional[list[dict]]:
    """The paper's Table 5 / 8 rows (``table`` int, metrics float), or None where the file is absent."""
    if not path.is_file():
        return None
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return [{**r, "table": int(r["table"]), **{m: float(r[m]) for m in PAPER_METRICS}} for r in rows]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: unreadable paper table ({type(exc).__name__}: {exc}); it needs the columns "
                        f"table, network, generation_method, {', '.join(PAPER_METRICS)}; restore it or remove "
                        "it") from None


def paper_effects(rows: list[dict], study: str) -> dict[str, float]:
    """Per network: S generated / real (substitution) or S gain of real + generated over real (expansion)."""
    table = [r for r in rows if r["table"] == TABLE[study]]
    base = {r["network"]: r["S"] for r in table if r["generation_method"] == PAPER_BASE[study]}
    ours = {r["network"]: r["S"] for r in table if r["generation_method"] == PAPER_OURS}
    if study == "substitution":
        return {n: ours[n] / base[n] for n in base if n in ours and base[n] > 0}
    return {n: ours[n] - base[n] for n in base if n in ours}


def our_effect(study: str, rows: list[dict]) -> dict[str, float]:
    """Our counterpart of :func:`paper_effects` from the aggregated rows, per protocol (plain, and *fair* where
    it was run), each the mean over generation seeds."""
    by = {r["setting"]: r["S"] for r in rows}
    name = "generated" if study == "substitution" else "real+generated"
    out = {}
    for protocol, wanted in (("plain", name), ("fair", f"{name} fair")):
        gen = [v for st, v in by.items() if plain_setting(st) == wanted]
        if by.get("real") and gen:
            out[protocol] = (float(np.mean(gen)) / by["real"] if study == "substitution"
                             else float(np.mean(gen)) - by["real"])
    return out


def paper_lines(study: str, rows: list[dict], path: Path) -> list[str]:
    """The paper's rows of this study's table and its ratios beside ours (markdown)."""
    table = [r for r in rows if r["table"] == TABLE[study]]
    lines = [f"The paper's Table {TABLE[study]} (detectors trained until convergence with their official settings; "
             f"`{path}`):", "",
             "| network | training data | " + " | ".join(TITLES[m] for m in PAPER_METRICS) + " |",
             "|---|---|" + "---:|" * len(PAPER_METRICS)]
    for r in table:
        method, base = r["generation_method"], "real" if study == "substitution" else "real 150"
        data = base if method == PAPER_BASE[study] else (f"generated by {method}" if study == "substitution"
                                                         else f"{base} + {method}")
        lines.append(f"| {r['network']} | {data} | " + " | ".join(f"{r[m]:.3f}" for m in PAPER_METRICS) + " |")
    return lines + [""]


def effect_line(study: str, paper: dict[str, float], ours: dict[str, float]) -> str:
    if study == "substitution":
        fmt, what = (lambda v: f"{v:.2f}×"), "S of the detector trained on generated pairs / on real pairs"
    else:
        fmt, what = (lambda v: f"{v:+.3f}"), "S gain of real + generated pairs over real pairs alone"
    values = sorted(paper.values())
    span = f" (range {fmt(values[0])} to {fmt(values[-1])})" if values else ""
    per = ", ".join(f"{n} {fmt(v)}" for n, v in paper.items()) or "–"
    mine = ", ".join(f"{fmt(v)}" if p == "plain" else f"{p} {fmt(v)}" for p, v in ours.items()) or "–"
    return f"{what}: paper {per}{span}; ours {mine} (mean over seeds)."


# -- pictures --------------------------------------------------------------------------------------
def write_grids(ctx: Ctx, study: str, folder: Path) -> list[Path]:
    """Per category: mask | real | generated (substitution) or new mask | generated, twice per row (expansion)."""
    gen_dir = Path(ctx.outputs(f"{study}.generation")["generated"])
    pairs = find_pairs(gen_dir, ctx.categories, check_sizes=False)
    real = {p.stem: p for p in find_pairs(ctx.data_root, ctx.categories, check_sizes=False)}
    n = int(ctx.cfg["report"]["n_grid"])
    rng = np.random.default_rng(int(ctx.cfg["report"]["seed"]))
    written = []
    for cat in ctx.categories:
        mine = [p for p in pairs if p.category.name == cat.name]
        if not mine:
            continue
        pick = [mine[i] for i in sorted(rng.choice(len(mine), size=min(n, len(mine)), replace=False))]
        path = folder / f"grid_{study}_{cat.name}.png"
        if study == "substitution":
            rows = [[p.mask, real[p.stem].image, p.image] for p in pick if p.stem in real]
            picture_grid(rows, ["mask", "real", "generated"], path)
        else:
            rows = [[a.mask, a.image] + ([b.mask, b.image] if b is not None else [])
                    for a, b in zip(pick[::2], [*pick[1::2], None])]
            picture_grid(rows, ["new mask", "generated", "new mask", "generated"], path)
        written.append(path)
    return written


# -- markdown --------------------------------------------------------------------------------------
def table_markdown(rows: list[dict]) -> str:
    """Our settings' scores (mean ± std over seeds) in the paper's metrics; the paper's own rows follow
    separately (:func:`paper_lines`)."""
    head = ["setting", "training data", "seeds"] + [f"{TITLES[m]} {'↑' if HIGHER_IS_BETTER[m] else '↓'}"
                                                    for m in PAPER_METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * len(PAPER_METRICS)) + "|"]
    for r in rows:
        cells = [r["setting"], r["train_data"], str(r["seeds"])] + [_pm(r[m], r[f"{m}_std"]) for m in PAPER_METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_csv_rows(study: str, rows: list[dict]) -> list[dict]:
    """One row per setting: mean and std over seeds of every metric."""
    out = []
    for r in rows:
        row = {"study": study, "setting": r["setting"], "train_data": r["train_data"], "n_train": r["n_train"],
               "n_test": r["n_test"], "seeds": r["seeds"]}
        for m in METRICS:
            row[f"{m}_mean"], row[f"{m}_std"] = r[m], r[f"{m}_std"]
        out.append(row)
    return out


def fidelity_markdown(study: str, fid: dict, filt: Optional[dict]) -> tuple[str, list[dict]]:
    lines, csv_rows = [], []
    iou = fid["iou"]
    lines += [f"Detector IoU (map binarised at 0.5 vs the image's mask), detectors trained on the real training split, "
              f"mean ± std over {len(iou['per_seed'])} seed(s); {iou['n_generated']} generated vs {iou['n_test']} "
              "real test pairs:", "",
              "| category | IoU generated | IoU real test | ratio | CNR generated | CNR real (same masks) | "
              "CNR real training | sign agreement |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    adh = fid["mask_adherence"]
    for group, entry in iou["per_category"].items():
        g, r = entry.get("generated"), entry.get("real_test")
        a = adh.get("all" if group == OVERALL else group, {})
        cells = [group, _pm(g["mean"], g["std"], 3) if g else "–", _pm(r["mean"], r["std"], 3) if r else "–",
                 f"{entry['ratio']:.2f}" if entry.get("ratio") is not None else "–",
                 _fmt(a.get("cnr_generated")), _fmt(a.get("cnr_real")), _fmt(a.get("cnr_real_train")),
                 _fmt(a.get("sign_agreement"), 2)]
        lines.append("| " + " | ".join(cells) + " |")
        csv_rows.append({"study": study, "category": group, "iou_generated": g["mean"] if g else None,
                         "iou_generated_std": g["std"] if g else None, "iou_real_test": r["mean"] if r else None,
                         "iou_real_test_std": r["std"] if r else None, "ratio": entry.get("ratio"),
                         "cnr_generated": a.get("cnr_generated"), "cnr_real_same_masks": a.get("cnr_real"),
                         "cnr_real_train": a.get("cnr_real_train"), "sign_agreement": a.get("sign_agreement")})
    lines += ["", "CNR: |mean inside the mask - mean in a ring around it| / ring std (evaluation.mask_adherence); "
              "sign agreement: share of generated images whose defect is darker/brighter like the real image "
              "with the same mask.", ""]
    f = fid["fid"]
    if "rows" in f:
        lines += [f"FID / KID against the real images of `{f['real']}` (Inception-v3 pool3, torch-fidelity):", "",
                  *fid_kid_lines(f["rows"])]
    else:
        lines.append(f"FID / KID skipped: {f['skipped']}")
    if filt is not None:
        per = ", ".join(f"{k} {v['kept']}/{v['total']}" for k, v in filt["per_category"].items())
        lines += ["", f"IoU filter (threshold {filt['threshold']}): kept {filt['n_kept']} of {filt['total']} generated "
                  f"pairs ({per}); mean IoU {filt['mean_iou']:.3f}. Its detector was trained on the real training "
                  "split only."]
    return "\n".join(lines) + "\n", csv_rows


def _fmt(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if _num(value) is not None else "–"


def times_markdown(ctx: Ctx, folder: Path) -> str:
    times = ctx.store.times()
    keys = [k for k in times if k != "report"]
    order = {k: i for i, k in enumerate(KINDS)}
    keys.sort(key=lambda k: (0 if k.startswith("substitution") else 1 if k.startswith("expansion") else 2,
                             order.get(k.split(".")[-1], 99)))
    rows = [{"stage": k, "seconds": times[k].get("seconds"), "total_seconds": times[k].get("total_seconds"),
             "attempts": len(times[k].get("attempts", []))} for k in keys]
    write_text_atomic(csv_text(rows, ["stage", "seconds", "total_seconds", "attempts"]), folder / "stage_times.csv")
    lines = ["| stage | last finished run | all attempts | attempts |", "|---|---:|---:|---:|"]
    for r in rows:
        beside = times[r["stage"]].get("beside") if r["seconds"] is not None else None
        lines.append(f"| {r['stage']} | {seconds_text(r['seconds']) if r['seconds'] is not None else '–'}"
                     f"{' (beside ' + ', '.join(beside) + ')' if beside else ''} | "
                     f"{seconds_text(r['total_seconds'] or 0)} | {r['attempts']} |")
    total = sum(r["seconds"] or 0 for r in rows)
    overlap = (" (stages run beside each other are counted each in full, so the wall time was shorter)"
               if any(times[r["stage"]].get("beside") for r in rows) else "")
    lines.append(f"\nSum of the last finished runs: {seconds_text(total)}{overlap}"
                 ". A training stage that resumed a run started elsewhere (e.g. a generator begun with main.py by "
                 "hand) counts only the time spent inside the study; the run's own metrics.jsonl has the rest.")
    return "\n".join(lines) + "\n"


def maskgen_lines(ctx: Ctx) -> list[str]:
    """The expansion study's mask producer: KS statistics of its new masks vs the training masks and
    vs the held-out test masks."""
    out = ctx.outputs("expansion.maskgen")
    split = ctx.outputs("expansion.split")
    lines = [f"New masks from the mask producer trained on the {split['n_train']} training masks, two-sample KS "
             "statistics (area / components / elongation; 0 = same distribution):", "",
             "| compared with | " + " | ".join(c.name for c in ctx.categories) + " |",
             "|---|" + "---|" * len(ctx.categories)]
    for key, what in (("report", f"the {split['n_train']} training masks"),
                      ("report_heldout", f"the {split['n_test']} held-out test masks")):
        if key not in out:
            continue
        mg = json.loads(Path(out[key]).read_text())["categories"]
        cells = [(f"{mg[c.name]['area']['ks']:.3f} / {mg[c.name]['components']['ks']:.3f} / "
                  f"{mg[c.name]['elongation']['ks']:.3f}") if c.name in mg else "–" for c in ctx.categories]
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    return lines + ["", "(`expansion/maskgen/report/report.md`, `expansion/maskgen/report_heldout/report.md`)", ""]


def write_report(ctx: Ctx, folder: Path) -> Path:
    cfg = ctx.cfg
    folder.mkdir(parents=True, exist_ok=True)
    studies = enabled_studies(cfg)
    agg: dict[str, list[dict]] = {}
    runs, fidelity, skipped, by_study, paired = [], {}, {}, {}, {}
    for study in studies:
        det = ctx.outputs(f"{study}.detectors")
        results = json.loads(Path(det["results"]).read_text())
        runs += [{"study": study, **r} for r in results["rows"]]
        by_study[study], paired[study] = results["rows"], study_paired(results)
        agg[study] = aggregate(results["rows"])
        skipped[study] = det.get("skipped", {})
        fidelity[study] = json.loads(Path(ctx.outputs(f"{study}.fidelity")["fidelity"]).read_text())
    tgt = targets(cfg, agg, fidelity, by_study, paired)
    paper_path = paper_tables_path()
    paper_rows = read_paper_tables(paper_path)
    write_json_atomic({"targets": tgt, "tables": agg, "paired": paired}, folder / "targets.json")
    write_text_atomic(csv_text(runs, ["study", "detector", "setting", "train_data", "n_train", "n_real", "n_generated",
                                      "real_share", "steps", "warmup_steps", "n_test", *METRICS, "train_minutes"]),
                      folder / "detector_runs.csv")
    chart_rows = [dict(r, label=f"{s}\n{r['setting']}", study=s) for s in studies for r in agg[s]]
    bar_chart(chart_rows, "label", folder / "detectors.png", group_key="study", error_suffix="_std",
              title="Detectors tested on the real test split (mean ± std over seeds)")

    md = [f"# Real-data study `{cfg['name']}`", ""]
    if cfg.get("profile"):
        md += [f"**Profile: {cfg['profile']}**", ""]
    md += [f"Data: `{cfg['data_root']}`; output: `{cfg['out']}`. Every training stage (generator, mask producer, "
           "filter detector, detectors) saw only the training split of the study it serves (checked before each "
           "one).", "", "## Targets", "", "| target | result | detail |", "|---|---|---|"]
    for t in tgt:
        verdict = "**met**" if t["met"] else ("not evaluable" if t["met"] is None else "**not met**")
        md.append(f"| {t['target']} | {verdict} | {t['detail']} |")
    fidelity_csv = []
    for study in studies:
        sc = cfg["studies"][study]
        write_text_atomic(csv_text(table_csv_rows(study, agg[study]),
                                   ["study", "setting", "train_data", "n_train", "n_test", "seeds",
                                    *[f"{m}_{k}" for m in METRICS for k in ("mean", "std")]]),
                          folder / f"table{TABLE[study]}.csv")
        title = ("Data substitution (paper Table 5)" if study == "substitution"
                 else "Data expansion (paper Table 8)")
        md += ["", f"## {title}: {sc['ratio']} split, tested on {agg[study][0]['n_test']} real test pairs", "",
               table_markdown(agg[study])]
        if paper_rows is None:
            md += [f"The paper's Table {TABLE[study]} figures are left out: {paper_path} not found (set "
                   "DEFFILLER_SHARED to the shared folder that holds paper/deffiller_tables.csv).", ""]
        else:
            md += paper_lines(study, paper_rows, paper_path)
            md += [effect_line(study, paper_effects(paper_rows, study), our_effect(study, agg[study])), ""]
        md.append(f"Ours: mean ± std over seeds {', '.join(map(str, sc['detectors']['seeds']))} of our detector "
                  f"(`{Path(sc['detectors']['config']).name}` with {', '.join(sc['detectors']['overrides']) or 'no'} "
                  "overrides).")
        if any(r.get("real_share") is not None for r in by_study[study]):
            md += ["", "Settings ending in *fair* keep the real pairs at a fixed share of every batch (as many real "
                   "pairs per batch as the real-only run, generated pairs making up the rest; an epoch is one pass "
                   "over the real pairs), so the real pairs are seen as often as without the generated ones."]
        steps = {(r["setting"], r.get("steps"), r.get("warmup_steps")) for r in by_study[study]
                 if r.get("steps") is not None}
        if steps:
            md += ["", "Optimiser steps (warm-up steps) per run: "
                   + ", ".join(f"{s} {n} ({w})" for s, n, w in sorted(steps, key=str)) + "."]
        if paired[study]:
            md += ["", f"Paired S differences against `{BASELINE}` (same detector seed, same test images):", "",
                   paired_markdown(paired[study])]
        for name, why in skipped[study].items():
            md.append(f"\nSetting {name} left out: {why}.")
        filt = ctx.outputs(f"{study}.filter") if study == "expansion" else None
        if filt is not None:
            filt = {**filt, "threshold": sc["filter"]["threshold"]}
        text, rows = fidelity_markdown(study, fidelity[study], filt)
        fidelity_csv += rows
        md += ["", f"### Fidelity of the {study} study's generated pairs", "", text]
        if study == "expansion":
            md += maskgen_lines(ctx)
        grids = write_grids(ctx, study, folder)
        md += ["", "Pictures (" + ("mask | real | generated from the same mask" if study == "substitution"
                                   else "new masks from the mask producer and the images generated from them") + "):",
               ""] + [f"![{g.stem}]({g.name})" for g in grids]
    write_text_atomic(csv_text(fidelity_csv, list(fidelity_csv[0]) if fidelity_csv else ["study"]),
                      folder / "fidelity.csv")
    md += ["", "## Detector results", "", "![detectors](detectors.png)", "",
           "Every seed's run: `detector_runs.csv`; tables: "
           + ", ".join(f"`table{TABLE[s]}.csv`" for s in studies) + ".",
           "", "## Stage wall times", "", times_markdown(ctx, folder)]
    return write_text_atomic("\n".join(md) + "\n", folder / "report.md")
