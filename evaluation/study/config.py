"""The study's YAML config: schema (the defaults), loading (defaults -> YAML -> ``--set``), path resolution.

Relative paths in a study config are taken from the repository root, so the same file works from any
current directory. Only enabled studies are checked for their required keys.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Sequence

from dataset.splits import parse_ratio
from runtime import options as O
from runtime.configs import REPO
from runtime.errors import UserError

STUDIES = ("substitution", "expansion")
#: the paper's split of each study (train:test)
RATIOS = {"substitution": "9:1", "expansion": "1:5"}

_GENERATION = {"sampler": "ddim", "steps": 50, "guidance_scale": 2.5, "guidance_low": O.Open(None),
               "guidance_interval": O.Open(None),  # [LO, HI]: guidance only at timesteps LO <= t <= HI
               "output_size": 200, "grayscale": True,
               "batch_size": 16, "precision": "fp32", "num_per_mask": 1,
               # one set of generated pairs per seed (the first in generated/, seed s in generated_seed<s>/);
               # every generated setting is trained and tested once per seed
               "seeds": O.ListOf(None, [0]),
               "seed": O.Open(None),  # retired: one seed, read as seeds: [seed]
               "mask_dir": None}  # null: the study's own masks (training masks / the mask producer's)
_COMMON = {
    "enabled": True,
    "ratio": None,              # null: RATIOS[study]
    "seed": 0,                  # split seed
    "split": None,              # null: DATA/splits/<data folder>_<ratio>_seed<seed>.json (made when missing)
    "pretrain": {"enabled": False, "config": None, "n_per_category": 300, "set": O.ListOf(None)},
    # release: a generator file written by inference.export, used as is instead of training one (its metadata
    # or <file>.provenance.json must name this study's split by sha256)
    "generator": {"config": None, "set": O.ListOf(None), "run": None, "release": None},
    "generation": _GENERATION,
    "detectors": {"config": "configs/eval/detector.yaml", "overrides": O.ListOf(None),
                  "seeds": O.ListOf(None, [0, 1, 2])},
}
_EXPANSION = {
    **_COMMON,
    # real_share: also train the settings with generated pairs keeping real pairs at this share of every batch
    # (rows "<setting> fair" beside the plain ones); null: the plain settings only
    "detectors": {**_COMMON["detectors"], "real_share": None},
    "maskgen": {"config": None, "set": O.ListOf(None), "n_per_category": 300, "seed": 0,
                "sample_set": O.ListOf(None),
                # per-category thresholds fitted to the training masks on a draw of its own (maskgen.calibrate)
                "calibrate": {"enabled": True, "n_per_category": 100, "seed": 1000}},
    "filter": {"threshold": 0.6, "bin_threshold": 0.5, "seed": 0},
}
SCHEMA: dict[str, Any] = {
    "name": None,               # null: the config file's stem
    "profile": "",              # a label printed on the report (e.g. what a quick profile leaves out)
    "out": None,                # null: OUTPUT/study/<name>
    "data_root": None,
    "categories": O.Open(None),
    "device": "auto",
    "threads": 0,               # torch CPU threads for the study's own work (0: torch's default)
    "jobs": 1,                  # detector runs and generation seeds at a time, each in a process of its own
    "studies": {"substitution": _COMMON, "expansion": _EXPANSION},
    "fidelity": {"fid": True, "inception": None, "batch_size": 32, "kid_subsets": 100, "kid_subset_size": 1000},
    "report": {"n_grid": 6, "seed": 0},
    "targets": {"substitution_s_ratio": 0.9, "iou_ratio": 0.8},
    "paper": O.Open(None),      # retired (the paper's numbers come from the shared tables): accepted, then dropped
}

#: keys holding paths (resolved against the repository root); per study and top level
_STUDY_PATHS = ("split", "pretrain.config", "generator.config", "generator.run", "generator.release",
                "generation.mask_dir",
                "detectors.config", "maskgen.config")
_TOP_PATHS = ("out", "data_root", "fidelity.inception")


def repo_path(value: Any) -> Path | None:
    """``value`` as an absolute path (relative ones from the repository root); None stays None."""
    if value in (None, ""):
        return None
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else (REPO / path).resolve()


def _get(node: dict, dotted: str) -> Any:
    for key in dotted.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _put(node: dict, dotted: str, value: Any) -> None:
    *head, last = dotted.split(".")
    for key in head:
        node = node[key]
    node[last] = value


def load_study_config(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The study config at ``path`` with ``overrides`` (strict keys), paths made absolute, required keys checked."""
    cfg = O.layered(SCHEMA, path, overrides, what="study config")
    where = f"study config {path}"
    if cfg.pop("paper", None) is not None:
        warnings.warn(f"{where}: the 'paper:' section is no longer read (the report takes the paper's figures from "
                      "the shared paper/deffiller_tables.csv); remove it", stacklevel=2)
    cfg["name"] = str(cfg.get("name") or Path(path).stem)
    if not cfg.get("out"):
        cfg["out"] = f"OUTPUT/study/{cfg['name']}"
    for key in _TOP_PATHS:
        value = repo_path(_get(cfg, key))
        _put(cfg, key, str(value) if value is not None else None)
    if not cfg.get("data_root"):
        raise UserError(f"{where}: missing 'data_root'; add it or pass --set data_root=PATH")
    enabled = [s for s in STUDIES if cfg["studies"][s]["enabled"]]
    if not enabled:
        raise UserError(f"{where}: both studies are disabled; set studies.substitution.enabled or "
                        "studies.expansion.enabled to true")
    for study in STUDIES:
        sc = cfg["studies"][study]
        if isinstance(sc.get("ratio"), (int, float)) and not isinstance(sc.get("ratio"), bool):
            raise UserError(f"{where}: studies.{study}.ratio {sc['ratio']!r} is a number; write the train:test "
                            f"ratio in quotes, e.g. ratio: '9:1' (YAML reads an unquoted 9:1 as the number 541)")
        sc["ratio"] = str(sc.get("ratio") or RATIOS[study])
        for key in _STUDY_PATHS:
            if key.split(".")[0] in sc:
                value = repo_path(_get(sc, key))
                _put(sc, key, str(value) if value is not None else None)
        g = sc["generation"]
        if g.get("seed") is not None:
            warnings.warn(f"{where}: studies.{study}.generation.seed is read as seeds: [{g['seed']}]; write seeds "
                          "(a list) instead", stacklevel=2)
            g["seeds"] = [g["seed"]]
        g.pop("seed", None)
        if not sc["enabled"]:
            continue
        gseeds = g["seeds"]
        if (not gseeds or len(set(gseeds)) != len(gseeds)
                or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in gseeds)):
            raise UserError(f"{where}: studies.{study}.generation.seeds must be a list of distinct whole numbers "
                            f">= 0, e.g. [0, 1], got {gseeds!r}")
        release = sc["generator"]["release"]
        if release:
            if sc["generator"]["run"] or sc["pretrain"]["enabled"]:
                raise UserError(f"{where}: studies.{study}.generator.release uses a trained file as is; set "
                                "generator.run to null and pretrain.enabled to false, or release to null to train")
            if not Path(release).is_file() or Path(release).suffix != ".safetensors":
                raise UserError(f"{where}: studies.{study}.generator.release {release}: no such .safetensors file; "
                                "give a file written by inference.export, or null to train the generator")
        elif not sc["generator"]["config"]:
            raise UserError(f"{where}: missing 'studies.{study}.generator.config' (a main.py YAML such as "
                            f"configs/sd900_cpu.yaml); add it or pass --set studies.{study}.generator.config=PATH")
        seeds = sc["detectors"]["seeds"]
        if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) for s in seeds):
            raise UserError(f"{where}: studies.{study}.detectors.seeds must be a list of distinct integers, "
                            f"got {seeds!r}")
        share = sc["detectors"].get("real_share")
        if share is not None and (isinstance(share, bool) or not isinstance(share, (int, float))
                                  or not 0 < float(share) < 1):
            raise UserError(f"{where}: studies.{study}.detectors.real_share must be a number between 0 and 1 "
                            f"(exclusive, e.g. 0.5), got {share!r}; fix it, or null for the plain settings only")
        if study == "expansion" and not sc["maskgen"]["config"]:
            raise UserError(f"{where}: missing 'studies.expansion.maskgen.config' (e.g. configs/maskgen_cpu.yaml)")
        mg = sc.get("maskgen") if study == "expansion" else None
        if mg and mg["calibrate"]["enabled"] and mg["calibrate"]["seed"] == mg["seed"]:
            raise UserError(f"{where}: studies.expansion.maskgen.calibrate.seed equals maskgen.seed ({mg['seed']}): "
                            "the thresholds would be fitted on the very masks the study uses; use different seeds")
        if sc["pretrain"]["enabled"] and not sc["pretrain"]["config"]:
            sc["pretrain"]["config"] = sc["generator"]["config"]
    for key in ("substitution_s_ratio", "iou_ratio"):
        O.finite(cfg["targets"][key], f"{where}: targets.{key}", 0.0)
    check_numbers(cfg, where)
    return cfg


def _whole(value: Any, name: str, low: int, high: float = math.inf) -> int:
    """``value`` as a whole number in [low, high]; else a one-line UserError."""
    x = O.finite(value, name, low)
    if not x.is_integer() or x > high:
        span = f">= {low}" + ("" if high == math.inf else f" and <= {high:g}")
        raise UserError(f"{name} must be a whole number {span}, got {value!r}")
    return int(x)


def _in_unit(value: Any, name: str, open_low: bool = False, open_high: bool = False) -> float:
    x = O.finite(value, name, 0.0, low_inclusive=not open_low)
    if x > 1.0 or (open_high and x == 1.0):
        raise UserError(f"{name} must lie in {'(' if open_low else '['}0, 1{')' if open_high else ']'}, got {value!r}")
    return x


def _check_ratio(text: str, name: str) -> None:
    """A study split needs training and test samples: both sides of train:test above 0."""
    fraction = parse_ratio(text)
    if not 0.0 < fraction < 1.0:
        raise UserError(f"{name} {text!r} leaves the {'test' if fraction == 0 else 'training'} set empty; "
                        "both sides of train:test must be above 0 (e.g. 9:1)")


def check_numbers(cfg: dict[str, Any], where: str) -> None:
    """Every number of an enabled study in range (what the run would refuse later, refused now and by --plan)."""
    from inference.generate import MAX_OUTPUT_SIZE

    _whole(cfg["threads"], f"{where}: threads", 0)
    _whole(cfg["jobs"], f"{where}: jobs", 1)
    f = cfg["fidelity"]
    for key in ("batch_size", "kid_subsets", "kid_subset_size"):
        _whole(f[key], f"{where}: fidelity.{key}", 1)
    _whole(cfg["report"]["n_grid"], f"{where}: report.n_grid", 0, 64)
    _whole(cfg["report"]["seed"], f"{where}: report.seed", 0)
    for study in enabled_studies(cfg):
        sc, at = cfg["studies"][study], f"{where}: studies.{study}"
        _check_ratio(sc["ratio"], f"{at}.ratio")
        _whole(sc["seed"], f"{at}.seed", 0)
        g = sc["generation"]
        for key, low in (("steps", 1), ("batch_size", 1), ("num_per_mask", 1)):
            _whole(g[key], f"{at}.generation.{key}", low)
        if g["output_size"] is not None:
            _whole(g["output_size"], f"{at}.generation.output_size", 1, MAX_OUTPUT_SIZE)
        O.finite(g["guidance_scale"], f"{at}.generation.guidance_scale")
        if sc["pretrain"]["enabled"]:
            _whole(sc["pretrain"]["n_per_category"], f"{at}.pretrain.n_per_category", 1)
        if study != "expansion":
            continue
        m = sc["maskgen"]
        _whole(m["n_per_category"], f"{at}.maskgen.n_per_category", 1)
        _whole(m["seed"], f"{at}.maskgen.seed", 0)
        if m["calibrate"]["enabled"]:  # maskgen.calibrate needs at least 10 draws per category
            _whole(m["calibrate"]["n_per_category"], f"{at}.maskgen.calibrate.n_per_category", 10)
            _whole(m["calibrate"]["seed"], f"{at}.maskgen.calibrate.seed", 0)
        _in_unit(sc["filter"]["threshold"], f"{at}.filter.threshold")
        _in_unit(sc["filter"]["bin_threshold"], f"{at}.filter.bin_threshold", open_low=True, open_high=True)
        _whole(sc["filter"]["seed"], f"{at}.filter.seed", 0)


def enabled_studies(cfg: dict[str, Any]) -> list[str]:
    return [s for s in STUDIES if cfg["studies"][s]["enabled"]]
