"""The study's YAML config: schema (the defaults), loading (defaults -> YAML -> ``--set``), path resolution.

Relative paths in a study config are taken from the repository root, so the same file works from any
current directory. Only enabled studies are checked for their required keys.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from runtime import options as O
from runtime.errors import UserError

from ..config import REPO

STUDIES = ("substitution", "expansion")
#: the paper's split of each study (train:test)
RATIOS = {"substitution": "9:1", "expansion": "1:5"}

_GENERATION = {"sampler": "ddim", "steps": 50, "guidance_scale": 2.5, "output_size": 200, "grayscale": True,
               "batch_size": 16, "seed": 0, "precision": "fp32", "num_per_mask": 1,
               "mask_dir": None}  # null: the study's own masks (training masks / the mask producer's)
_COMMON = {
    "enabled": True,
    "ratio": None,              # null: RATIOS[study]
    "seed": 0,                  # split seed
    "split": None,              # null: DATA/splits/<data folder>_<ratio>_seed<seed>.json (made when missing)
    "pretrain": {"enabled": False, "config": None, "n_per_category": 300, "set": O.ListOf(None)},
    "generator": {"config": None, "set": O.ListOf(None), "run": None},
    "generation": _GENERATION,
    "detectors": {"config": "configs/eval/detector.yaml", "overrides": O.ListOf(None),
                  "seeds": O.ListOf(None, [0, 1, 2])},
}
_EXPANSION = {
    **_COMMON,
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
    "studies": {"substitution": _COMMON, "expansion": _EXPANSION},
    "fidelity": {"fid": True, "inception": None, "batch_size": 32, "kid_subsets": 100, "kid_subset_size": 1000},
    "report": {"n_grid": 6, "seed": 0},
    "targets": {"substitution_s_ratio": 0.9, "iou_ratio": 0.8},
    "paper": O.Open({}),        # {substitution|expansion: {setting: {S, MAE, E_max, F_max}}}: the paper's numbers
}

#: keys holding paths (resolved against the repository root); per study and top level
_STUDY_PATHS = ("split", "pretrain.config", "generator.config", "generator.run", "generation.mask_dir",
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
        sc["ratio"] = str(sc.get("ratio") or RATIOS[study])
        for key in _STUDY_PATHS:
            if key.split(".")[0] in sc:
                value = repo_path(_get(sc, key))
                _put(sc, key, str(value) if value is not None else None)
        if not sc["enabled"]:
            continue
        if not sc["generator"]["config"]:
            raise UserError(f"{where}: missing 'studies.{study}.generator.config' (a main.py YAML such as "
                            f"configs/sd900_cpu.yaml); add it or pass --set studies.{study}.generator.config=PATH")
        seeds = sc["detectors"]["seeds"]
        if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) for s in seeds):
            raise UserError(f"{where}: studies.{study}.detectors.seeds must be a list of distinct integers, "
                            f"got {seeds!r}")
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
    return cfg


def enabled_studies(cfg: dict[str, Any]) -> list[str]:
    return [s for s in STUDIES if cfg["studies"][s]["enabled"]]
