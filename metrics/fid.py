"""FID and KID between a real and a generated image folder, per category and overall.

Features are Inception-v3 pool3 (2048-d) activations computed by torch-fidelity's
``FeatureExtractorInceptionV3`` (the TF-Inception port used by torch-fidelity and torchmetrics:
uint8 input, TF1-compatible bilinear resize to 299, same weights as the original TTUR FID);
the statistics, FID and KID come from torch-fidelity's own functions. The weights cannot be
downloaded at run time here: place ``weights-inception-2015-12-05-6726825d.pth`` (see
:data:`INCEPTION_URL`) at ``model_sem/``, ``$DEFFILLER_INCEPTION`` or pass ``--inception``.

Any object with a ``name`` attribute and ``__call__(uint8 tensor N x 3 x H x W) -> N x D``
can replace the Inception network (tests inject a small random CNN). Features of every folder
are cached as ``.npz`` keyed by the extractor name and a hash of the file names and bytes, so
the real set is embedded once.

The command: ``python -m evaluation.fid`` (:mod:`evaluation.fid`).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence
from unittest import mock

import numpy as np
import torch
from tqdm import tqdm

from dataset.files import IMAGE_EXTS, few, list_by_stem
from dataset.folders import category_of, image_folder
from dataset.io import image_size, read_image
from runtime.atomic import write_atomic
from runtime.configs import REPO
from runtime.device import pick_device
from runtime.digest import file_sha256
from runtime.errors import UserError
from runtime.safe_load import safe_torch_load

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
INCEPTION_ENV = "DEFFILLER_INCEPTION"
DEFAULT_CACHE = REPO / "DATA" / "fid_cache"
OVERALL = "overall"


class FeatureExtractor(Protocol):
    name: str

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def check_positive(**values: int) -> None:
    """Each ``--name value`` must be a whole number of at least 1."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise UserError(f"--{name} must be a whole number of at least 1, got {value!r}")


def inception_search_paths(explicit: str | Path | None = None) -> list[Path]:
    paths = []
    if explicit:
        paths.append(Path(explicit))
    if os.environ.get(INCEPTION_ENV):
        paths.append(Path(os.environ[INCEPTION_ENV]))
    paths.append(REPO / "model_sem" / INCEPTION_FILE)
    paths.append(Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE)
    return paths


def find_inception_weights(explicit: str | Path | None = None) -> Path:
    """The local Inception weights file, or a one-line UserError saying where to put it."""
    for path in inception_search_paths(explicit):
        if path.is_dir():
            path = path / INCEPTION_FILE
        if path.is_file():
            return path
    if explicit:
        raise UserError(f"{explicit}: Inception weights not found; download {INCEPTION_FILE} from "
                        f"{INCEPTION_URL} and pass its path")
    raise UserError(f"Inception weights missing: download {INCEPTION_FILE} from {INCEPTION_URL} "
                    f"and put it in {REPO / 'model_sem'}/ (or set {INCEPTION_ENV} / pass --inception)")


def build_inception(path: Path):
    """torch-fidelity's Inception-v3 with the weights of ``path``, read by our safe loader.

    The library's constructor always loads weights itself (unpickling a local file, or fetching
    its release URL); it is handed the state dict we read instead, so no file is unpickled by it.
    """
    from torch_fidelity import feature_extractor_inceptionv3 as tf_inception

    fix = f"re-download {INCEPTION_FILE} from {INCEPTION_URL}"
    state = safe_torch_load(path, "Inception weights file", fix)
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"{path}: not the torch-fidelity Inception weights (not a state dict); {fix}")
    with mock.patch.object(tf_inception, "load_state_dict_from_url", lambda *a, **k: state):
        try:
            return tf_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise UserError(f"{path}: not the torch-fidelity Inception weights ({type(exc).__name__}); "
                            f"{fix}") from None


class InceptionFeatures:
    """torch-fidelity's Inception-v3 pool3 features (2048-d) from a local weights file."""

    name = "inception-v3-compat-2048"

    def __init__(self, weights: str | Path | None = None, device: str = "cpu"):
        self.device = pick_device(device)
        self.net = build_inception(find_inception_weights(weights))
        self.net.to(self.device).eval()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        (feats,) = self.net(images.to(self.device))
        return feats.cpu()


# ---------------------------------------------------------------------------------------------
# features of folders (with cache)


def folder_digest(files: Sequence[Path], extractor_name: str) -> str:
    """Content hash of a list of files (names and bytes) plus the extractor identity."""
    h = hashlib.sha256(extractor_name.encode())
    for path in files:
        h.update(path.name.encode() + b"\0")
        h.update(bytes.fromhex(file_sha256(path)))
    return h.hexdigest()[:24]


def _load_uint8(path: Path) -> np.ndarray:
    return np.asarray(read_image(path), np.uint8)  # H, W, 3 (grey images replicated)


def extract_features(files: Sequence[Path], extractor: FeatureExtractor, batch_size: int = 32,
                     progress: bool = True, desc: str = "features") -> np.ndarray:
    """``(N, D)`` float64 features in file order; images of different sizes go in separate batches."""
    check_positive(batch_size=batch_size)
    files = list(files)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, path in enumerate(files):
        by_size.setdefault(image_size(path), []).append(i)
    out: list[np.ndarray] = [np.empty(0)] * len(files)
    with tqdm(total=len(files), desc=desc, disable=not progress, leave=False, dynamic_ncols=True) as bar:
        for idx in by_size.values():
            for start in range(0, len(idx), batch_size):
                take = idx[start:start + batch_size]
                batch = torch.from_numpy(np.stack([_load_uint8(files[i]) for i in take])).permute(0, 3, 1, 2)
                feats = extractor(batch.contiguous())
                feats = (feats.detach().cpu().double().numpy() if torch.is_tensor(feats)
                         else np.asarray(feats, np.float64))
                for i, f in zip(take, feats):
                    out[i] = f.reshape(-1)
                bar.update(len(take))
    return np.stack(out)


def _read_cache(cache_file: Path, stems: list[str], log: Callable[[str], None]) -> np.ndarray | None:
    """Cached features if the file is intact and lists exactly ``stems``; else ``None`` with a note."""
    try:
        with np.load(cache_file, allow_pickle=False) as data:
            cached_stems = [str(s) for s in data["stems"]]
            feats = np.asarray(data["features"], np.float64)
        if cached_stems != stems or feats.ndim != 2 or len(feats) != len(stems) or not np.isfinite(feats).all():
            raise ValueError("it does not match the folder")
    except Exception as exc:  # a damaged .npz raises zip, pickle-refusal, key and value errors
        log(f"warning: feature cache {cache_file} is unreadable ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:120] if str(exc) else 'damaged'}); recomputing it")
        return None
    return feats


def folder_features(folder: str | Path, extractor: FeatureExtractor, cache_dir: str | Path | None = DEFAULT_CACHE,
                    batch_size: int = 32, progress: bool = True,
                    log: Callable[[str], None] = print) -> tuple[list[str], np.ndarray]:
    """``(stems, features)`` of every image in ``folder`` (or its Source Images subfolder)."""
    files = list_by_stem(image_folder(folder), IMAGE_EXTS, "image", strict=False)
    paths = list(files.values())
    cache_file = None
    if cache_dir is not None:
        key = folder_digest(paths, extractor.name)
        cache_file = Path(cache_dir) / f"{Path(folder).resolve().name}-{key}.npz"
        cached = _read_cache(cache_file, list(files), log) if cache_file.is_file() else None
        if cached is not None:
            log(f"features: {len(paths)} images of {folder} from cache {cache_file.name}")
            return list(files), cached
    feats = extract_features(paths, extractor, batch_size, progress, desc=f"features {Path(folder).name}")
    if cache_file is not None:
        stems = np.array(list(files), dtype=str)
        write_atomic(cache_file, lambda fh: np.savez(fh, stems=stems, features=feats))
        log(f"features: {len(paths)} images of {folder} cached in {cache_file}")
    return list(files), feats


# ---------------------------------------------------------------------------------------------
# metrics (torch-fidelity's implementations)


def feature_statistics(features: np.ndarray) -> dict[str, np.ndarray]:
    from torch_fidelity.metric_fid import fid_features_to_statistics

    return fid_features_to_statistics(torch.as_tensor(np.asarray(features, np.float64)))


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between two Gaussians (torch-fidelity's ``fid_statistics_to_metric``)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    s1 = {"mu": np.asarray(mu1, np.float64), "sigma": np.atleast_2d(np.asarray(sigma1, np.float64))}
    s2 = {"mu": np.asarray(mu2, np.float64), "sigma": np.atleast_2d(np.asarray(sigma2, np.float64))}
    return float(fid_statistics_to_metric(s1, s2, verbose=False)[KEY_METRIC_FID])


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    if len(real) < 2 or len(fake) < 2:
        raise UserError(f"FID needs at least 2 images per side (got {len(real)} real, {len(fake)} generated)")
    a, b = feature_statistics(real), feature_statistics(fake)
    return frechet_distance(a["mu"], a["sigma"], b["mu"], b["sigma"])


def kid_from_features(real: np.ndarray, fake: np.ndarray, subsets: int = 100,
                      subset_size: int | None = 1000, seed: int = 2020) -> tuple[float, float, int]:
    """``(mean, std, subset_size)`` of torch-fidelity's polynomial-kernel KID; the subset size
    is capped at the smaller set (KID stays unbiased at a few hundred images)."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    check_positive(kid_subsets=subsets)
    if subset_size is not None:
        check_positive(kid_subset_size=subset_size)
    size = min(int(subset_size or 1000), len(real), len(fake))
    if size < 2:
        raise UserError(f"KID needs at least 2 images per side (got {len(real)} real, {len(fake)} generated)")
    out = kid_features_to_metric(torch.as_tensor(np.asarray(real, np.float64)),
                                 torch.as_tensor(np.asarray(fake, np.float64)),
                                 kid_subsets=int(subsets), kid_subset_size=size, kid_kernel="poly",
                                 kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                                 kid_kernel_poly_coef0=1, rng_seed=int(seed), verbose=False)
    return float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD]), size


def group_stems(stems: Sequence[str], categories=None) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(stems):
        groups.setdefault(category_of(s, categories), []).append(i)
    return groups


def compare_features(real_stems, real_feats, fake_stems, fake_feats, categories=None,
                     kid_subsets: int = 100, kid_subset_size: int | None = 1000,
                     log: Callable[[str], None] = print) -> list[dict]:
    """Rows ``{category, n_real, n_fake, FID, KID, KID_std}`` per shared category, then overall."""
    rg, fg = group_stems(real_stems, categories), group_stems(fake_stems, categories)
    rows = []
    only_fake = [g for g in fg if g not in rg]
    if only_fake:
        log(f"note: generated categories with no real images: {few(only_fake)} (only in overall)")
    for g in rg:
        if g not in fg:
            continue
        r, f = real_feats[rg[g]], fake_feats[fg[g]]
        rows.append(_row(g, r, f, kid_subsets, kid_subset_size))
    rows.append(_row(OVERALL, real_feats, fake_feats, kid_subsets, kid_subset_size))
    return rows


def _row(name, r, f, kid_subsets, kid_subset_size) -> dict:
    kid, kid_std, size = kid_from_features(r, f, kid_subsets, kid_subset_size)
    return {"category": name, "n_real": len(r), "n_fake": len(f), "FID": fid_from_features(r, f),
            "KID": kid, "KID_std": kid_std, "KID_subset": size}


def compare_folders(real: str | Path, fake: str | Path, extractor: FeatureExtractor, categories=None,
                    cache_dir: str | Path | None = DEFAULT_CACHE, cache_fake: bool = False,
                    batch_size: int = 32, kid_subsets: int = 100, kid_subset_size: int | None = 1000,
                    progress: bool = True, log: Callable[[str], None] = print) -> list[dict]:
    """FID/KID rows between two image folders (real features cached; generated ones optionally)."""
    rs, rf = folder_features(real, extractor, cache_dir, batch_size, progress, log)
    fs, ff = folder_features(fake, extractor, cache_dir if cache_fake else None, batch_size, progress, log)
    return compare_features(rs, rf, fs, ff, categories, kid_subsets, kid_subset_size, log)


def format_rows(rows: Sequence[Mapping]) -> str:
    lines = [f"{'category':<12}{'n_real':>7}{'n_fake':>7}{'FID':>10}{'KID x1e3':>16}"]
    for r in rows:
        lines.append(f"{r['category']:<12}{r['n_real']:>7}{r['n_fake']:>7}{r['FID']:>10.2f}"
                     f"{r['KID'] * 1e3:>9.2f} ± {r['KID_std'] * 1e3:<5.2f}")
    return "\n".join(lines)


def fid_kid_lines(rows: Sequence[Mapping]) -> list[str]:
    """Markdown table lines of FID / KID rows (``category, n_real, n_fake, FID, KID, KID_std``)."""
    lines = ["| category | n real | n generated | FID | KID ×1e3 |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['category']} | {r['n_real']} | {r['n_fake']} | {r['FID']:.2f} | "
                     f"{r['KID'] * 1e3:.2f} ± {r['KID_std'] * 1e3:.2f} |")
    return lines
