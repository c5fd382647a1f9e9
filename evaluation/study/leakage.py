"""No test sample may reach a training stage: the explicit checks run before each one.

By name: every training stage (generator and its pre-training, mask producer, the sample filter's
detector, the detectors) names the samples it is about to learn from; :func:`refuse_test_stems` stops the
study with one line naming the stage and the offending stems when any of them is a test sample of the
study it serves. Generated pairs count as test samples when they are named after one (``In_12`` or
``In_12_s1``: generated from that test mask) or when ``generation.json`` records a test mask of the
dataset as their source.

By content: :func:`pixel_digest` hashes a picture's decoded pixels, so a renamed copy or a lossless
re-encoding of a test image or mask has the digest of the original; :func:`refuse_test_content` refuses any
training input (real pairs, generated pairs and their masks, the mask producer's masks, the masks fed to
the generator) whose pixels equal a test item's. The split's sha256 is recorded in each training run's
folder (:func:`split_unchanged`) and in the generator's checkpoints, and checked again before the run's
outputs are used; an initial checkpoint must name the data it was trained on (:func:`check_init_checkpoint`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

from dataset.files import few, natural_key, source_stem
from dataset.io import open_image, write_json_atomic
from dataset.pairs import MASK_DIRS, Pair, find_pairs
from dataset.splits import load_split
from runtime.digest import array_sha256
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


def check_generator_data(stage: str, run_dir: Path, data_root: str, split_path: str,
                         test_stems: set[str]) -> tuple[list[str], Path]:
    """The generator run (a new one, or one already trained in ``run_dir``) learns only training samples;
    returns the stems it trains on and its split file."""
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
    return stems, split_file


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


# -- content: the pixels of every test item --------------------------------------------------------
_DIGESTS: dict[tuple[str, int, int], str] = {}
SPLIT_RECORD = "study_split.json"
PROVENANCE_SUFFIX = ".provenance.json"


def pixel_digest(path: str | Path) -> str:
    """sha256 of a picture's decoded pixels (dtype, shape, bytes), cached by path, size and mtime.

    A renamed copy or a lossless re-encoding has the original's digest; a grey picture stored as RGB,
    with a palette or as 1-bit counts as the same grey picture.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        raise UserError(f"{path}: file not found or unreadable; restore it or remove it from the folder") from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        img = open_image(path)
        if img.mode in ("1", "P", "LA", "PA", "RGB", "RGBA", "CMYK", "YCbCr"):
            arr = np.asarray(img.convert("RGB"))
            if (arr == arr[..., :1]).all():
                arr = arr[..., 0]
        else:
            arr = np.asarray(img)
        _DIGESTS[key] = array_sha256(arr)
    return _DIGESTS[key]


def test_digests(pairs: Sequence[Pair]) -> dict[str, str]:
    """``{pixel digest: "test image In_3 (path)"}`` for every image and mask of the test pairs."""
    out: dict[str, str] = {}
    for p in pairs:
        out.setdefault(pixel_digest(p.mask), f"test mask {p.stem} ({p.mask})")
        out.setdefault(pixel_digest(p.image), f"test image {p.stem} ({p.image})")
    return out


def pair_files(pairs: Iterable[Pair]) -> list[Path]:
    return [f for p in pairs for f in (p.image, p.mask)]


def refuse_test_content(stage: str, files: Iterable[str | Path], tests: Mapping[str, str], fix: str,
                        use: str = "train on") -> None:
    """Raise :class:`LeakError` naming the first of ``files`` whose pixels equal a test item's."""
    hits = [(Path(f), tests[d]) for f in files if (d := pixel_digest(f)) in tests]
    if hits:
        more = f" (and {len(hits) - 1} more file(s))" if len(hits) > 1 else ""
        raise LeakError(f"leak: stage {stage} would {use} {hits[0][0]}, whose pixels equal the {hits[0][1]}"
                        f"{more}; {fix}")


def split_unchanged(stage: str, folder: str | Path, split_path: Optional[str | Path] = None) -> None:
    """Record the split's sha256 in a training run's ``folder`` (``split_path`` given and none recorded yet),
    or check it again: a split rewritten after its stage trained is refused."""
    from runtime.digest import file_sha256

    path = Path(folder) / SPLIT_RECORD
    if not path.is_file():
        if split_path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic({"split": str(Path(split_path).resolve()), "sha256": file_sha256(split_path)}, path)
        return
    try:
        record = json.loads(path.read_text())
        before, named = str(record["sha256"]), Path(split_path or record["split"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path}: unreadable split record; rerun with --force {stage} to retrain") from None
    now = file_sha256(named) if named.is_file() else "(missing)"
    if now != before:
        raise UserError(f"{named}: the split changed after stage {stage} trained on it (sha256 {before[:12]} in "
                        f"{path}, {now[:12]} now); restore the split file, or rerun with --force {stage} to retrain")


def ckpt_split_unchanged(stage: str, ckpt: str | Path) -> None:
    """A checkpoint's split (file and sha256 in its metadata, written by training) is unchanged since."""
    from ldm.checkpoint import read_metadata
    from runtime.digest import file_sha256

    meta = read_metadata(ckpt)
    before, named = meta.get("split_sha256"), Path(meta.get("split") or "")
    if not before:
        return
    now = file_sha256(named) if named.is_file() else "(missing)"
    if now != before:
        raise UserError(f"{named}: the split changed after {ckpt} was trained on it (sha256 {before[:12]} in its "
                        f"metadata, {now[:12]} now); restore the split file, or rerun with --force {stage} to "
                        "retrain")


def read_provenance(ckpt: str | Path) -> Optional[dict]:
    """``<ckpt>.provenance.json`` checked against the file (``{"sha256", "training_data"}``, optionally
    ``"split_sha256"``: the split whose training side it learned from); None when there is none."""
    from runtime.digest import file_sha256

    sidecar = Path(f"{ckpt}{PROVENANCE_SUFFIX}")
    if not sidecar.is_file():
        return None
    try:
        declared = json.loads(sidecar.read_text())
        sha, what = declared["sha256"], str(declared["training_data"]).strip()
        split_sha = declared.get("split_sha256")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"{sidecar}: write it as {{\"sha256\": \"<sha256 of {Path(ckpt).name}>\", "
                        "\"training_data\": \"<what it was trained on>\"}") from None
    if sha != file_sha256(ckpt) or not what:
        raise UserError(f"{sidecar}: its sha256 is not that of {ckpt} (or training_data is empty); it describes "
                        "another file: fix it or use the file it was written for")
    return {"sha256": sha, "training_data": what, "split_sha256": str(split_sha) if split_sha else ""}


def check_release(stage: str, ckpt: str | Path, split_path: str | Path) -> str:
    """A released generator used as the study's generator was trained on this study's split (the split's
    sha256 in its metadata or its provenance file); returns how that is known."""
    from ldm.checkpoint import read_metadata
    from runtime.digest import file_sha256

    now = file_sha256(split_path)
    recorded = read_metadata(ckpt).get("split_sha256")
    where = "its metadata"
    if not recorded:
        declared = read_provenance(ckpt)
        recorded = declared["split_sha256"] if declared else ""
        where = f"{Path(ckpt).name}{PROVENANCE_SUFFIX}"
    if not recorded:
        raise LeakError(f"leak: stage {stage}: the release {ckpt} names no training split (no split_sha256 in its "
                        f"metadata or in {where}); write {where} beside it: {{\"sha256\": \"<its sha256>\", "
                        "\"training_data\": \"...\", \"split_sha256\": \"<sha256 of the split it was trained on>\"}, "
                        "or let the study train its generator (generator.release: null)")
    if recorded != now:
        raise LeakError(f"leak: stage {stage}: the release {ckpt} was trained on another split (sha256 "
                        f"{recorded[:12]} in {where}) than this study's {split_path} ({now[:12]}); its training pairs "
                        "may be test pairs here: use a release trained on this split, or generator.release: null")
    return f"trained on this study's split (sha256 {now[:12]}, {where})"


def check_init_checkpoint(stage: str, ckpt: Optional[str | Path], split_path: str | Path, test_stems: set[str],
                          tests: Mapping[str, str]) -> str:
    """The initial weights of a study's training stage must name the data they were trained on; returns how.

    Accepted: none (from scratch); weights trained on procedural data; weights trained on the study's split
    (same sha256) or on a split file still found with its recorded sha256 whose training pairs hold no test
    sample of this study, by name or content; an external release with ``<file>.provenance.json``
    (``{"sha256": its sha256, "training_data": "..."}``).
    """
    from ldm.checkpoint import read_metadata
    from runtime.digest import file_sha256

    if ckpt in (None, "", "none"):
        return "from scratch"
    ckpt = Path(ckpt)
    meta = read_metadata(ckpt)
    if meta.get("procedural") == "true":
        return "procedural data"
    recorded = meta.get("split_sha256")
    if recorded:
        if recorded == file_sha256(split_path):
            return "the study's split"
        named = meta.get("split", "")
        found = next((p for p in sorted(_readings(named)) if p.is_file()), None) if named else None
        if found is None or file_sha256(found) != recorded:
            raise LeakError(f"leak: stage {stage}: {ckpt} was trained on the split {named or '?'} (sha256 "
                            f"{recorded[:12]}), which is {'not found' if found is None else 'changed since'}; its "
                            "training data cannot be checked: restore that split file or use other initial weights")
        stems = load_split(found)["train"]
        fix = "use initial weights trained on this study's training split (or procedural data)"
        refuse_test_stems(stage, stems, test_stems, f"the initial weights {ckpt} (split {found})", fix)
        by_stem = {p.stem: p for p in find_pairs(meta.get("data_root") or "", check_sizes=False)}
        refuse_test_content(stage, pair_files(by_stem[s] for s in stems if s in by_stem), tests,
                            f"{ckpt} was trained on it (split {found}); {fix}")
        return f"split {found}"
    if meta.get("data_root"):
        raise LeakError(f"leak: stage {stage}: {ckpt} was trained on every pair of {meta['data_root']} (no split), "
                        "test samples included; use initial weights trained on this study's training split")
    declared = read_provenance(ckpt)
    if declared is not None:
        return f"declared in {Path(f'{ckpt}{PROVENANCE_SUFFIX}').name}: {declared['training_data']}"
    sidecar = Path(f"{ckpt}{PROVENANCE_SUFFIX}")
    raise LeakError(f"leak: stage {stage}: the initial checkpoint {ckpt} names no provenance (no training split "
                    "digest in its metadata); use weights written by main.py or inference.export, train from "
                    f"scratch (train.ckpt: none), or for an external release write {sidecar.name} beside it: "
                    '{"sha256": "<its sha256>", "training_data": "<what it was trained on>"}')
