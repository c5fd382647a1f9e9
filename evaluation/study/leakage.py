"""No test sample may reach a training stage: the explicit check run before each one.

Every training stage (generator and its pre-training, mask producer, the sample filter's detector, the
detectors) names the samples it is about to learn from; :func:`refuse_test_stems` stops the study with
one line naming the stage and the offending stems when any of them is a test sample of the study it
serves. Generated pairs count as test samples when they are named after one (``In_12`` or
``In_12_s1``: generated from that test mask) or when ``generation.json`` records a test mask of the
dataset as their source.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional, Sequence

from dataset.files import few, natural_key, source_stem
from dataset.pairs import MASK_DIRS
from dataset.splits import load_split
from runtime.errors import UserError

from .config import repo_path


class LeakError(UserError):
    """A test sample would reach a training stage."""


def refuse_test_stems(stage: str, stems: Iterable[str], test_stems: set[str], source: str, fix: str) -> None:
    """Raise :class:`LeakError` when any of ``stems`` (or the mask it was generated from) is a test stem."""
    leaked = sorted({s for s in stems if s in test_stems or source_stem(s) in test_stems}, key=natural_key)
    if leaked:
        raise LeakError(f"leak: stage {stage} would train on {len(leaked)} test sample(s) of its study "
                        f"({few(leaked)}) from {source}; {fix}")


def _readings(value: str | Path) -> set[Path]:
    """Where a path may point: as given when absolute; from the repository root or the current directory
    when relative (main.py reads relative paths from the directory it was started in)."""
    path = Path(str(value)).expanduser()
    if path.is_absolute():
        return {path.resolve()}
    return {repo_path(path), (Path.cwd() / path).resolve()}


def same_path(a: Optional[str | Path], b: Optional[str | Path]) -> bool:
    """Whether two spellings of a path name the same file (relative ones: see :func:`_readings`)."""
    if a in (None, "") or b in (None, ""):
        return a in (None, "") and b in (None, "")
    return bool(_readings(a) & _readings(b))


def run_training_data(run_dir: Path) -> Optional[dict]:
    """``{data_root, split, procedural}`` a main.py run folder was trained with (its config.yaml), or None."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as exc:  # omegaconf/yaml raise several types
        raise UserError(f"{path}: unreadable run config ({type(exc).__name__}); move the run folder away") from None
    train, data = cfg.get("train") or {}, cfg.get("data") or {}
    return {"data_root": train.get("DATA_ROOT"), "split": train.get("split"),
            "procedural": train.get("DATA_ROOT") is None and data.get("procedural") is not None}


def check_generator_data(stage: str, run_dir: Path, data_root: str, split_path: str, test_stems: set[str]) -> None:
    """The generator run (a new one, or one already trained in ``run_dir``) learns only training samples."""
    saved = run_training_data(run_dir)
    trained_root = saved["data_root"] if saved else data_root
    trained_split = saved["split"] if saved else split_path
    where = f"the run folder {run_dir}" if saved else "the study's split"
    if saved is not None and saved["procedural"]:
        raise LeakError(f"leak: stage {stage}: {run_dir} was trained on procedural data, not on the study's "
                        "training split; point generator.run at a run trained on it (or remove the folder)")
    if not same_path(trained_root, data_root):
        raise LeakError(f"leak: stage {stage}: {run_dir} was trained on {trained_root}, not on the study's "
                        f"data_root {data_root}; train the generator on the study's data (remove or move the folder)")
    if trained_split in (None, ""):
        raise LeakError(f"leak: stage {stage}: {run_dir} was trained on every pair of {data_root} (no split), "
                        "test samples included; train it on the study's training split (remove or move the folder)")
    split_file = next((p for p in sorted(_readings(trained_split)) if p.is_file()), None)
    if split_file is None:
        raise UserError(f"stage {stage}: {where} trains on the split file {trained_split}, which is not found "
                        "(relative paths are read from the repository root and the current directory); restore it, "
                        "or remove the run folder to train afresh")
    stems = load_split(split_file)["train"]
    refuse_test_stems(stage, stems, test_stems, f"{where} ({split_file})",
                      "train the generator on this study's training split only (generator.run / split)")


def check_stems(stage: str, stems: Sequence[str], test_stems: set[str], source: str) -> None:
    refuse_test_stems(stage, stems, test_stems, source, "use the study's training samples only")


def generated_sources(folder: Path, data_root: str) -> list[str]:
    """Stems of dataset masks that ``generation.json`` in ``folder`` records as sources (empty without a record)."""
    record = Path(folder) / "generation.json"
    if not record.is_file():
        return []
    try:
        images = json.loads(record.read_text()).get("images", {})
    except (OSError, ValueError, AttributeError):
        raise UserError(f"{record}: unreadable generation record; regenerate the folder") from None
    mask_dirs = {(repo_path(data_root) / d).resolve() for d in MASK_DIRS}
    out = []
    for entry in images.values():
        mask = Path(str(entry.get("mask", "")))
        if mask.parent.resolve() in mask_dirs:
            out.append(mask.stem)
    return out


def check_generated(stage: str, folder: Path, stems: Sequence[str], data_root: str, test_stems: set[str]) -> None:
    """Generated pairs named like test samples, or generated from a test mask of the dataset, are refused."""
    refuse_test_stems(stage, stems, test_stems, f"the generated folder {folder} (pairs named after test samples)",
                      "generate from training masks or new masks only (generation.mask_dir)")
    refuse_test_stems(stage, generated_sources(folder, data_root), test_stems,
                      f"the generated folder {folder} (generation.json: made from test masks)",
                      "generate from training masks or new masks only (generation.mask_dir)")
