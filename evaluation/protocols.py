"""The paper's detection protocols as one command each.

* **data substitution** (Table 5): a 9:1 split of the real data; a detector trained on the real
  training pairs vs one trained only on pairs *generated from the training masks*; both tested
  on the real test pairs.
* **data expansion** (Table 8): a 1:5 split simulates scarcity; a detector trained on the real
  training pairs vs on the real pairs plus N generated pairs; tested on the real test pairs.

Both are the same loop over ``detectors x settings`` described by a YAML config
(``configs/eval/substitution.yaml``, ``configs/eval/expansion.yaml``): each setting names
whether the real training split is used and which generated folders (and how many of their
pairs) are added. Splits are read from (or made into) the same split files the detector training
command uses. Outputs under ``out``: ``<detector>/<setting>/`` (checkpoint, maps, metrics),
``results.md``/``results.csv`` (paper layout), ``results_per_category.csv``, ``results.png``
(Fig. 7 style) and ``results.json``. Finished runs are reused when their inputs are unchanged.

A setting with ``real_share`` trains with the real pairs at that share of every batch (the detector's
``train.real_share``); those rows get a table of their own in ``results.md`` beside the plain one. Every setting
is compared with the baseline (the first setting of real pairs alone) per detector, on the per-image S of
``<detector>/<setting>/per_image_S.json`` (:mod:`.paired`: per-seed differences, bootstrap over test images).

    python -m evaluation.protocols run --config configs/eval/substitution.yaml \
        [--set data_root=PATH settings.1.generated.0.dir=PATH] [--force]
    python -m evaluation.protocols export-masks --data_root PATH --out DATA/sd900_train_masks
    python -m evaluation.protocols carve-validation --split SPLIT.json --out SPLIT_val0.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from dataset.categories import categories_from_config
from dataset.files import few, source_stem
from dataset.folders import mask_folder
from dataset.io import open_image, write_json_atomic
from dataset.pairs import Pair, find_pairs, natural_key
from dataset.splits import carve_validation, get_split, load_split, save_split
from metrics.sod import METRICS
from runtime import options as O
from runtime.atomic import write_text_atomic
from runtime.cli import positive_int
from runtime.configs import load_config, to_plain
from runtime.digest import content_line, lines_sha256, stat_line
from runtime.errors import UserError, run_cli
from runtime.parallel import run_jobs, threads_per_job

from .detector.checks import check_detector_config
from .detector.runs import detector_file, run_summary
from .detector.train import DEFAULT_CONFIG as DETECTOR_CONFIG
from .detector.train import train_detector
from .paired import paired_differences, paired_markdown
from .report import PAPER_METRICS, bar_chart, csv_text, markdown_table, write_tables

PROTOCOLS = ("substitution", "expansion")

# every key a protocol config may hold (configs/eval/substitution.yaml documents them)
SCHEMA = {
    "protocol": None, "data_root": None, "ratio": None, "seed": 0, "split": None, "out": None,
    "jobs": 1,  # detector runs trained at a time, each in a worker process of its own
    "categories": O.Open(None),
    "detectors": O.ListOf({"name": None, "config": None, "overrides": O.ListOf(None)}),
    "detector_overrides": O.ListOf(None),
    "settings": O.ListOf({"name": None, "real": False, "real_share": None,
                          "generated": O.ListOf({"dir": None, "n": None})}),
}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", str(name)) or "run"


def select_generated(pairs: Sequence[Pair], n: int | None, seed: int, where: str) -> list[Pair]:
    """All pairs, or ``n`` of them drawn without replacement (deterministic by ``seed``)."""
    if n is None:
        return list(pairs)
    n = int(n)
    if n < 0 or n > len(pairs):
        raise UserError(f"{where}: n = {n} but the folder holds {len(pairs)} generated pairs; "
                        f"use n <= {len(pairs)} (or null for all)")
    idx = np.sort(np.random.default_rng(int(seed)).choice(len(pairs), n, replace=False))
    return [pairs[i] for i in idx]


def training_set(setting: DictConfig, real_train: Sequence[Pair], categories, seed: int,
                 test_stems: set[str], protocol: str, log: Callable[[str], None] = print) -> tuple[list[Pair], dict]:
    """The training pairs of one setting and a description ``{n_real, n_generated, sources}``."""
    name = setting.get("name")
    pairs: list[Pair] = list(real_train) if setting.get("real", False) else []
    sources = [f"real {len(pairs)}"] if pairs else []
    n_gen = 0
    for k, gen in enumerate(setting.get("generated") or []):
        where = f"setting {name!r} generated #{k + 1}"
        if not gen.get("dir"):
            raise UserError(f"{where}: missing 'dir' (a folder of generated pairs from infer.py)")
        found = find_pairs(gen.dir, categories)
        chosen = select_generated(found, gen.get("n"), seed + k, where)
        leaked = [p.stem for p in chosen if source_stem(p.stem) in test_stems]
        if leaked:
            msg = (f"{where}: {len(leaked)} generated pair(s) are named like test samples "
                   f"({few(leaked)}); generate from the training masks only")
            if protocol == "substitution":
                raise UserError(msg)
            log(f"note: {msg}")
        pairs.extend(chosen)
        n_gen += len(chosen)
        sources.append(f"{Path(gen.dir).name} {len(chosen)}")
    if not pairs:
        raise UserError(f"setting {name!r}: no training data; set real: true and/or list generated folders")
    return pairs, {"n_real": len(real_train) if setting.get("real", False) else 0,
                   "n_generated": n_gen, "sources": " + ".join(sources)}


def baseline_setting(settings: Sequence) -> str | None:
    """The first setting trained on the real pairs alone (what the others are compared with), or None."""
    return next((str(s.get("name")) for s in settings if s.get("real") and not s.get("generated")), None)


def setting_detector_config(det_cfg: DictConfig, setting: DictConfig) -> DictConfig:
    """The detector config of one setting: ``train.real_share`` from the setting's ``real_share``."""
    if setting.get("real_share") is None:
        return det_cfg
    return OmegaConf.merge(det_cfg, {"train": {"real_share": float(setting.real_share)}})


def _signatures(det_cfg: DictConfig, pairs: Sequence[Pair]) -> tuple[str, str, str]:
    """The signatures a finished run is reused by; the first is the one a new run records.

    First: the detector config but its thread count, and each training pair's file names and the SHA-256 of its
    image and mask (a copy of the data with new modification times, or in another folder, is the same data).
    Then, as earlier runs recorded it (they stay reusable while their files are untouched): the pairs' paths,
    image size and modification time, without and with the thread count."""
    plain = to_plain(det_cfg)
    train = plain.get("train") or {}
    if train.get("real_share", 0) is None:  # runs from before the key existed stay reusable
        del train["real_share"]
    if train.get("min_steps"):  # exact step count and warm-up in steps (earlier runs rounded up to epochs)
        train["schedule"] = "steps"
    stat_lines = [stat_line(f"{p.image.resolve()}|{p.mask.resolve()}", p.image) for p in pairs]
    with_threads = lines_sha256(stat_lines, head=json.dumps(plain, sort_keys=True))[:20]
    train.pop("num_threads", None)
    head = json.dumps(plain, sort_keys=True)
    content = lines_sha256((content_line(f"{p.image.name}|{p.mask.name}", p.image, p.mask) for p in pairs), head)
    return content[:20], lines_sha256(stat_lines, head=head)[:20], with_threads


def _read_meta(path: Path) -> dict:
    """A run's ``run.json`` (its reuse signature); missing, damaged or not an object: ``{}``, so the run retrains."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def detector_config(det: DictConfig, global_overrides: Sequence[str]) -> DictConfig:
    """One detector's config: configs/eval/detector.yaml, its ``config`` file, its ``overrides``, then
    the protocol's ``detector_overrides`` (every key checked against configs/eval/detector.yaml)."""
    flag = f"detector {det.get('name')!r} overrides / detector_overrides"
    cfg = load_config(det.get("config") or DETECTOR_CONFIG, DETECTOR_CONFIG,
                      [*(det.get("overrides") or []), *global_overrides], flag=flag)
    check_detector_config(cfg, f"detector {det.get('name')!r}")
    return cfg


def check_config(cfg: DictConfig) -> None:
    """Strict keys (:data:`SCHEMA`, and every detector's config and overrides) and required values."""
    O.check(to_plain(cfg), SCHEMA, "config")
    protocol = cfg.get("protocol")
    if protocol not in PROTOCOLS:
        raise UserError(f"config: protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    jobs = cfg.get("jobs", 1)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise UserError(f"config: jobs must be a whole number >= 1 (detector runs trained at a time), got {jobs!r}")
    for key in ("data_root", "ratio", "out"):
        if cfg.get(key) in (None, ""):
            raise UserError(f"config: missing '{key}'; add it or pass --set {key}=...")
    if not cfg.get("settings"):
        raise UserError("config: 'settings' is empty; list at least one training setting")
    names = [s.get("name") for s in cfg.settings]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise UserError(f"config: every setting needs a unique 'name' (got {names})")
    for s in cfg.settings:
        share = s.get("real_share")
        if share is None:
            continue
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < float(share) < 1:
            raise UserError(f"config: setting {s.name!r}: real_share must be a number between 0 and 1 (exclusive, "
                            f"e.g. 0.5), got {share!r}; fix it, or null to draw batches from all pairs")
        if not (s.get("real") and s.get("generated")):
            raise UserError(f"config: setting {s.name!r}: real_share needs real: true and generated folders; "
                            "remove it from this setting")
    dets = cfg.get("detectors") or [{"name": "detector"}]
    dnames = [d.get("name") for d in dets]
    if any(not n for n in dnames) or len(set(dnames)) != len(dnames):
        raise UserError(f"config: every detector needs a unique 'name' (got {dnames})")
    for det in dets:
        detector_config(OmegaConf.create(to_plain(det)), list(cfg.get("detector_overrides") or []))


def train_run(run_cfg: DictConfig, pairs: Sequence[Pair], run_dir: Path, n_real: int, meta: dict,
              progress: bool = True, log: Callable[[str], None] = print) -> float:
    """Train one detector run and write its ``run.json`` (``meta`` + the training minutes); returns the minutes."""
    t0 = time.time()
    train_detector(run_cfg, pairs, run_dir, progress=progress, log=log, n_real=n_real)
    minutes = (time.time() - t0) / 60
    write_json_atomic({**meta, "train_minutes": minutes}, run_dir / "run.json")
    return minutes


def _prefixed(prefix: str, message: str) -> None:
    print(f"{prefix} {message}", flush=True)


def _train_runs(runs: list[dict], jobs: int, progress: bool, log: Callable[[str], None]) -> None:
    """Train the runs that are not reused (``jobs`` at a time in worker processes); fills in their minutes."""
    todo = []
    for run in runs:
        label = f"[{run['det'].name} / {run['setting'].name}]"
        log(f"{label} training on {len(run['pairs'])} pairs ({run['info']['sources']})")
        if run["reuse"]:
            log(f"{label} reusing {detector_file(run['dir'])} (same data and config; --force retrains)")
        else:
            todo.append(run)
    if not todo:
        return
    parallel = jobs > 1 and len(todo) > 1
    calls = [(run["cfg"], run["pairs"], run["dir"], run["info"]["n_real"],
              {"signature": run["sig"], **run["info"], "setting": to_plain(run["setting"]),
               "detector": str(run["det"].name)},
              progress and not parallel,
              partial(_prefixed, f"[{run['det'].name} / {run['setting'].name}]") if parallel else log)
             for run in todo]
    if parallel:
        log(f"training {len(todo)} detector runs, {min(jobs, len(todo))} at a time in worker processes")

    def finished(i: int, minutes: float) -> None:
        todo[i]["minutes"] = minutes
        if parallel:
            log(f"[{todo[i]['det'].name} / {todo[i]['setting'].name}] trained in {minutes:.1f} min")

    threads = max(int(r["cfg"].train.get("num_threads") or 0) for r in todo)
    cores = os.cpu_count() or 1
    if parallel and min(jobs, len(todo)) * threads > cores:
        log(f"note: {min(jobs, len(todo))} runs x train.num_threads={threads} on {cores} cores; set "
            f"detector_overrides=[train.num_threads={max(1, cores // jobs)}] to keep them from slowing each other")
    run_jobs(train_run, calls, jobs, threads_per_job(threads, jobs), on_done=finished)


def _plan_runs(cfg: DictConfig, force: bool, log: Callable[[str], None]) -> tuple[list[dict], dict, Path, list[Pair]]:
    """Every detector x setting run of the protocol, each marked reused or to train; with the split, its file
    and the test pairs."""
    check_config(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cats = categories_from_config(cfg.get("categories"))
    seed = int(cfg.get("seed", 0))
    pairs = find_pairs(cfg.data_root, cats)
    split, split_path = get_split(pairs, cfg.get("split"), str(cfg.ratio), seed, cfg.data_root, log)
    by_stem = {p.stem: p for p in pairs}
    missing = [s for s in split["train"] + split["test"] if s not in by_stem]
    if missing:
        raise UserError(f"{split_path}: {len(missing)} sample(s) not in {cfg.data_root} ({few(missing)}); "
                        "use the split made for this dataset")
    real_train = [by_stem[s] for s in split["train"]]
    test = [by_stem[s] for s in split["test"]]
    for pair in test:  # a damaged test image would otherwise surface only after the training
        open_image(pair.image).close()
    test_stems = set(split["test"])
    log(f"{cfg.protocol}: {len(real_train)} real training / {len(test)} test pairs ({cfg.ratio}, {split_path})")
    detectors = cfg.get("detectors") or [OmegaConf.create({"name": "detector"})]
    global_over = list(cfg.get("detector_overrides") or [])
    runs = []
    for det in detectors:
        det_cfg = detector_config(det, global_over)
        for setting in cfg.settings:
            train_pairs, info = training_set(setting, real_train, cats, seed, test_stems, cfg.protocol, log)
            run_cfg = setting_detector_config(det_cfg, setting)
            run_dir = out / _safe(det.name) / _safe(setting.name)
            sigs = _signatures(run_cfg, train_pairs)
            meta = _read_meta(run_dir / "run.json")
            reuse = detector_file(run_dir) is not None and meta.get("signature") in sigs and not force
            runs.append({"det": det, "setting": setting, "cfg": run_cfg, "pairs": train_pairs, "info": info,
                         "dir": run_dir, "sig": sigs[0], "minutes": meta.get("train_minutes") if reuse else None,
                         "reuse": reuse})
    return runs, split, split_path, test


def train_protocol(cfg: DictConfig, force: bool = False, progress: bool = True,
                   log: Callable[[str], None] = print) -> list[dict]:
    """Train every detector x setting run that is not reused, without testing; returns the runs (``dir``:
    the run folder, ``det``, ``setting``). :func:`run_protocol` on the same config reuses them."""
    runs = _plan_runs(cfg, force, log)[0]
    _train_runs(runs, int(cfg.get("jobs") or 1), progress, log)
    return runs


def run_protocol(cfg: DictConfig, force: bool = False, progress: bool = True,
                 log: Callable[[str], None] = print) -> list[dict]:
    """Train/test every detector x setting and write the tables and the chart; returns the rows."""
    from .detector.predict import Detector, write_maps
    from .sod_eval import evaluate_folders

    t_start = time.time()
    runs, split, split_path, test = _plan_runs(cfg, force, log)
    out = Path(cfg.out)
    cats = categories_from_config(cfg.get("categories"))
    _train_runs(runs, int(cfg.get("jobs") or 1), progress, log)

    rows, cat_rows = [], []
    per_image: dict[tuple[str, str], dict[str, float]] = {}
    for run in runs:
        det, setting, run_dir, info = run["det"], run["setting"], run["dir"], run["info"]
        maps_dir = run_dir / "maps"
        if maps_dir.is_dir():
            shutil.rmtree(maps_dir)
        write_maps(Detector(detector_file(run_dir)), [p.image for p in test], maps_dir, progress=progress, log=log)
        scores: dict[str, float] = {}
        results = evaluate_folders(maps_dir, mask_folder(cfg.data_root), cats,
                                   stems=split["test"], log=log, per_image=scores)
        write_json_atomic(results, run_dir / "metrics.json")
        write_json_atomic(scores, run_dir / "per_image_S.json")
        per_image[str(det.name), str(setting.name)] = scores
        overall = results["overall"]
        steps = run_summary(run_dir)
        minutes = run["minutes"]
        row = {"detector": str(det.name), "setting": str(setting.name), "train_data": info["sources"],
               "n_train": len(run["pairs"]), "n_real": info["n_real"], "n_generated": info["n_generated"],
               "real_share": setting.get("real_share"), "steps": steps.get("steps"),
               "warmup_steps": steps.get("warmup_steps"), "n_test": overall["n"],
               **{m: overall[m] for m in METRICS},
               "train_minutes": round(float(minutes), 2) if minutes is not None else None}
        rows.append(row)
        for group, res in results.items():
            cat_rows.append({"detector": row["detector"], "setting": row["setting"], "category": group,
                             "n_test": res["n"], **{m: res[m] for m in METRICS}})
        log(f"[{det.name} / {setting.name}] S {overall['S']:.4f}  MAE {overall['MAE']:.4f}  "
            f"E-max {overall['E_max']:.4f}  F-max {overall['F_max']:.4f}")
    write_results(cfg, rows, cat_rows, out, split_path, per_image)
    log(f"{cfg.protocol}: done in {(time.time() - t_start) / 60:.1f} min -> {out / 'results.md'}")
    return rows


def write_results(cfg: DictConfig, rows: list[dict], cat_rows: list[dict], out: Path, split_path: Path,
                  per_image: dict[tuple[str, str], dict[str, float]] | None = None) -> None:
    table = 5 if cfg.protocol == "substitution" else 8
    multi = len({r["detector"] for r in rows}) > 1
    columns = (["detector"] if multi else []) + ["setting", "train_data", *PAPER_METRICS]
    title = (f"Data {cfg.protocol} ({cfg.ratio} split; layout of the paper's Table {table}); "
             f"detector{'s' if multi else ''}: {', '.join(dict.fromkeys(r['detector'] for r in rows))}")
    note = (f"Test set: {rows[0]['n_test']} real pairs from `{split_path}`. S: S-measure (alpha 0.5), "
            "E-max / F-max: maximum E-measure / F-measure (beta^2 0.3) over 256 thresholds (pysodmetrics).")
    plain = [r for r in rows if r.get("real_share") is None]
    md_path, _ = write_tables(plain, columns, out / "results", title=title, note=note + " " + _steps_note(plain))
    base = baseline_setting(cfg.settings)
    paired = paired_differences(rows, base, per_image) if base else []
    extra = []
    fair = [r for r in rows if r.get("real_share") is not None]
    if fair:
        shown = [r for r in rows if r["setting"] == base] + fair
        extra += ["## Real pairs at a fixed share of every batch", "",
                  markdown_table(shown, [*columns[:-len(PAPER_METRICS)], "real_share", *PAPER_METRICS],
                                 bold_best=PAPER_METRICS),
                  "Each batch holds as many real pairs as a batch of the real-only run, plus generated pairs making "
                  "up the rest; an epoch is one pass over the real pairs, so the real pairs are seen as often as "
                  "without the generated ones. " + _steps_note(shown), ""]
    if paired:
        extra += [f"## Paired differences against `{base}`", "", paired_markdown(paired)]
    if extra:
        write_text_atomic(md_path.read_text(encoding="utf-8") + "\n" + "\n".join(extra), md_path)
    all_cols = ["detector", "setting", "train_data", "n_train", "n_real", "n_generated", "real_share", "steps",
                "warmup_steps", "n_test", *METRICS, "train_minutes"]
    write_text_atomic(csv_text(rows, all_cols), out / "results.csv")
    write_text_atomic(csv_text(cat_rows, ["detector", "setting", "category", "n_test", *METRICS]),
                      out / "results_per_category.csv")
    write_json_atomic({"protocol": cfg.protocol, "config": to_plain(cfg), "split": str(split_path),
                       "rows": rows, "per_category": cat_rows, "baseline": base,
                       "paired": [{**p, "per_seed": dict(p["per_seed"])} for p in paired]}, out / "results.json")
    labels = [dict(r, label=(f"{r['detector']}\n{r['setting']}" if multi else r["setting"])) for r in rows]
    bar_chart(labels, "label", out / "results.png", group_key="detector" if multi else None,
              title=f"Data {cfg.protocol} ({cfg.ratio})")


def _steps_note(rows: Sequence[dict]) -> str:
    """Optimiser steps (warm-up steps) of each run, or "" where its summary did not record them."""
    known = {(r["setting"], r.get("steps"), r.get("warmup_steps")) for r in rows if r.get("steps") is not None}
    if not known:
        return ""
    return "Optimiser steps (warm-up): " + ", ".join(f"{s} {n} ({w})" for s, n, w in sorted(known, key=str)) + "."


def export_masks(data_root: str | Path, out: str | Path, split: str | None, ratio: str, seed: int,
                 subset: str = "train", log: Callable[[str], None] = print) -> Path:
    """Copy the split's masks into ``out`` (a ``--mask_dir`` for infer.py)."""
    pairs = find_pairs(data_root)
    sp, path = get_split(pairs, split, ratio, seed, data_root, log)
    by_stem = {p.stem: p for p in pairs}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise UserError(f"{out}: not empty; choose a fresh folder for the exported masks")
    for stem in sorted(sp[subset], key=natural_key):
        shutil.copy2(by_stem[stem].mask, out / by_stem[stem].mask.name)
    log(f"wrote {len(sp[subset])} {subset} masks of {path} to {out}; generate with: python infer.py "
        f"--mask_dir {out} --save_folder_name <name> --ckpt <checkpoint>")
    return out


def write_validation_split(split: str | Path, out: str | Path, fraction: float = 0.1, seed: int = 0,
                           log: Callable[[str], None] = print) -> Path:
    """Carve validation pairs out of ``split``'s training pairs (dataset.splits.carve_validation) into ``out``."""
    if not 0 < fraction < 1:
        raise UserError(f"--fraction must be between 0 and 1 (exclusive), got {fraction}")
    out = Path(out)
    if out.exists():
        raise UserError(f"{out}: exists; choose a new file name for the validation split (never overwritten)")
    carved = carve_validation(load_split(split), fraction, seed)
    save_split(carved, out)
    log(f"wrote {out}: {len(carved['train'])} training / {len(carved['test'])} validation pairs carved from the "
        f"training pairs of {split} ({len(carved['parent_test'])} test pairs in neither)")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.protocols", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run a protocol config (substitution or expansion)")
    run.add_argument("--config", required=True, help="e.g. configs/eval/substitution.yaml")
    O.add_set_argument(run, "data_root=PATH detector_overrides=[train.epochs=5]")
    run.add_argument("--force", action="store_true", help="retrain even when a finished run matches")
    run.add_argument("--jobs", type=positive_int, default=None,
                     help="detector runs trained at a time, each in a process of its own with the cores shared "
                          "out (default: the config's jobs, 1)")
    run.add_argument("--no_progress", action="store_true", help="no progress bars")
    exp = sub.add_parser("export-masks", help="copy a split's training masks into a folder for infer.py")
    exp.add_argument("--data_root", required=True, help="dataset folder with Source_Images/ and Ground_truth/")
    exp.add_argument("--out", required=True, help="folder to copy the masks into")
    exp.add_argument("--split", default=None, help="split JSON (default: a new split from --ratio and --seed)")
    exp.add_argument("--ratio", default="9:1", help="train:test ratio for a new split (default 9:1)")
    exp.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    exp.add_argument("--subset", default="train", choices=("train", "test"),
                     help="split part to export (default: train)")
    carve = sub.add_parser("carve-validation", help="carve validation pairs out of a split's training pairs")
    carve.add_argument("--split", required=True, help="the split JSON whose training pairs to carve from")
    carve.add_argument("--out", required=True, help="new split JSON: train = the rest, test = the validation pairs")
    carve.add_argument("--fraction", type=float, default=0.1, help="validation share (default 0.1)")
    carve.add_argument("--seed", type=int, default=0, help="carve seed (default 0)")
    args = parser.parse_args(argv)
    if args.cmd == "carve-validation":
        write_validation_split(args.split, args.out, args.fraction, args.seed)
        return 0
    if args.cmd == "export-masks":
        export_masks(args.data_root, args.out, args.split, args.ratio, args.seed, args.subset)
        return 0
    detector_sections = set(load_config(None, DETECTOR_CONFIG))
    for key, _ in O.parse_set(args.set):
        head = key.split(".")[0]
        if head not in SCHEMA and head in detector_sections:
            raise UserError(f"--set {key}: a protocol config has no '{head}'; detector settings go in "
                            f"detector_overrides, e.g. --set 'detector_overrides=[{key}=...]'")
    overrides = [*args.set, *([f"jobs={args.jobs}"] if args.jobs is not None else [])]
    cfg = load_config(args.config, None, overrides, schema=SCHEMA)
    run_protocol(cfg, force=args.force, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    run_cli(main)
