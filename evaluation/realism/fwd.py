"""Fréchet Wavelet Distance (FWD) of grey image sets, as ``pytorchfwd`` defines it.

Each image set is summarised like ``pytorchfwd.fwd.compute_packet_statistics`` does: a Haar wavelet
packet transform to ``level`` (``ptwt.WaveletPacket2D`` in natural order, the transform of
``pytorchfwd.freq_math.forward_wavelet_packet_transform``; each image transformed once), then per
packet the mean and covariance of its coefficients over the images; FWD
is the mean over packets of the Fréchet distance of ``pytorchfwd.freq_math.calculate_frechet_distance``,
batched (see :func:`frechet_distances`). Images are grey: the transform runs on the one
channel and the result is multiplied by 3, which is exactly the FWD of the images replicated to RGB
(pytorchfwd's own input) at a ninth of the covariance size. ``pytorchfwd`` itself is not a dependency:
it pins old scipy and ptwt releases, and ``pytorchfwd.fwd`` sets torch's default dtype to float64
for the whole process when imported; the tests compare with it where it is installed.

The Fréchet distance of sample statistics is biased upwards by roughly ``c/n1 + c/n2``, so FWD is only
comparable at equal set sizes: the floor (real half A vs real half B) is compared with real half A vs
the generated images of half B's masks (``same_size``), not with FWD(all real, all generated).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Optional, Sequence

import numpy as np
import torch

from dataset.files import source_stem
from runtime.seeds import mix_seed

from .data import OVERALL, ImageSet
from .thresholds import FLOOR_FACTOR

WAVELET = "Haar"
RGB_FACTOR = 3.0
PACKET_SIDE = 8          # the automatic level makes packets at most this many pixels wide
MIN_LEVEL = 4            # pytorchfwd's default level
SAMPLE_STREAM = 0x5EED_F3D   # seeds the real-sample draws apart from the halves (mix_seed(seed, draw), draw from 0)


def auto_level(side: int) -> int:
    """Level 4 (pytorchfwd's default), deeper for large images so packets stay <= ``PACKET_SIDE`` px."""
    return max(MIN_LEVEL, math.ceil(math.log2(max(side, 1) / PACKET_SIDE)))


@dataclass(eq=False)
class PacketStats:
    """Per-packet mean ``(P, D)`` and covariance ``(P, D, D)`` of one image set; for sets of fewer images than
    coefficients also ``factor`` ``(P, n, D)``, the centred coefficients / sqrt(n - 1), so that
    ``sigma = factor.T @ factor``."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    factor: Optional[np.ndarray] = None

    @cached_property
    def root(self) -> np.ndarray:
        """The symmetric square root of each packet's covariance (computed once per set)."""
        w, v = np.linalg.eigh(self.sigma)
        return (v * np.sqrt(np.clip(w, 0, None))[:, None, :]) @ v.transpose(0, 2, 1)


def packets(images: np.ndarray, level: int, wavelet: str = WAVELET, batch_size: int = 64) -> np.ndarray:
    """Wavelet packet coefficients ``(P, N, D)`` of ``(N, H, W)`` grey images in [0, 1] (float64)."""
    x = torch.from_numpy(np.ascontiguousarray(images, np.float64))[:, None]
    with torch.no_grad():
        out = torch.cat([_packet_transform(x[i:i + batch_size], wavelet, level)
                         for i in range(0, len(x), batch_size)])
    return out.permute(1, 0, 2, 3, 4).reshape(out.shape[1], len(x), -1).numpy()


def _packet_transform(x: torch.Tensor, wavelet: str, level: int) -> torch.Tensor:
    """``(N, P, 1, h, w)`` packets of ``(N, 1, H, W)`` images, in ``ptwt``'s natural order."""
    import ptwt
    import pywt

    tree = ptwt.WaveletPacket2D(x, pywt.Wavelet(wavelet), maxlevel=level)
    return torch.stack([tree[node] for node in tree.get_natural_order(level)], dim=1)


def stats_of(coefficients: np.ndarray, idx: Optional[np.ndarray] = None) -> PacketStats:
    """Mean and covariance per packet (``torch.cov`` convention, as pytorchfwd) of the images ``idx``."""
    x = coefficients if idx is None else coefficients[:, idx]
    mu = x.mean(axis=1)
    centred = x - mu[:, None]
    factor = centred / math.sqrt(max(x.shape[1] - 1, 1))
    sigma = factor.transpose(0, 2, 1) @ factor
    return PacketStats(mu, sigma, x.shape[1], factor if x.shape[1] < x.shape[2] else None)


def packet_stats(images: np.ndarray, level: int, wavelet: str = WAVELET) -> PacketStats:
    """Statistics of ``(N, H, W)`` grey images in [0, 1]."""
    return stats_of(packets(images, level, wavelet))


def frechet_distances(a: PacketStats, b: PacketStats) -> np.ndarray:
    """Per-packet Fréchet distance ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``.

    The formula of ``pytorchfwd.freq_math.calculate_frechet_distance``, batched over packets, with
    ``tr (S1 S2)^(1/2)`` as the sum of the square roots of the eigenvalues of ``S1^(1/2) S2 S1^(1/2)``
    (symmetric, so exact for the singular covariances of small sets, and ~10x faster than ``sqrtm``). When ``b``
    has fewer images than coefficients, ``S2 = F.T F`` and those eigenvalues are the nonzero ones of the
    ``n x n`` matrix ``(F S1^(1/2)) (F S1^(1/2)).T``, which is what is decomposed.
    """
    root = a.root
    if b.factor is not None:
        m = b.factor @ root
        eigenvalues = np.linalg.eigvalsh(m @ m.transpose(0, 2, 1))
    else:
        eigenvalues = np.linalg.eigvalsh(root @ b.sigma @ root)
    tr_covmean = np.sqrt(np.clip(eigenvalues, 0, None)).sum(axis=-1)
    diff = a.mu - b.mu
    return (np.einsum("pd,pd->p", diff, diff) + np.trace(a.sigma, axis1=1, axis2=2)
            + np.trace(b.sigma, axis1=1, axis2=2) - 2 * tr_covmean)


def frechet_wavelet_distance(a: Optional[PacketStats], b: Optional[PacketStats]) -> float:
    """FWD of two sets (RGB-equivalent value, see the module docstring); NaN below 2 images a set."""
    if a is None or b is None or a.n < 2 or b.n < 2:
        return float("nan")
    return RGB_FACTOR * float(np.mean(frechet_distances(a, b)))


def fwd_sets(a: np.ndarray, b: np.ndarray, level: int, wavelet: str = WAVELET) -> float:
    """FWD between two ``(N, H, W)`` grey stacks in [0, 1]."""
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    return frechet_wavelet_distance(packet_stats(a, level, wavelet), packet_stats(b, level, wavelet))


def halves(real: ImageSet, categories: Sequence[str], seed: int, draw: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Seeded random halves A, B of the real images per category and, stratified, ``overall``."""
    rng = np.random.default_rng(mix_seed(seed, draw))
    cats = np.asarray(real.categories)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in categories:
        idx = np.flatnonzero(cats == name)[rng.permutation(int(np.sum(cats == name)))]
        out[name] = (np.sort(idx[:len(idx) // 2]), np.sort(idx[len(idx) // 2:]))
    out[OVERALL] = (np.sort(np.concatenate([a for a, _ in out.values()])),
                    np.sort(np.concatenate([b for _, b in out.values()])))
    return out


def generated_for(real: ImageSet, b: np.ndarray, generated: ImageSet, candidates: np.ndarray,
                  rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Generated images made from the masks of real images ``b`` (one each; ``True``), else a random
    subset of ``candidates`` of the same size (``False``)."""
    first: dict[str, int] = {}
    for i in candidates:
        first.setdefault(source_stem(generated.stems[i]), int(i))
    wanted = [source_stem(real.stems[i]) for i in b]
    if wanted and all(s in first for s in wanted):
        return np.asarray([first[s] for s in wanted]), True
    return np.sort(rng.choice(candidates, size=min(len(b), len(candidates)), replace=False)), False


def fwd_table(real: ImageSet, real_x: np.ndarray, generated: ImageSet, gen_x: np.ndarray,
              real_groups: dict[str, np.ndarray], gen_groups: dict[str, np.ndarray], categories: Sequence[str],
              level: int, seed: int = 0, draws: int = 1, wavelet: str = WAVELET) -> dict[str, dict]:
    """Per group: FWD(real, generated), the real-vs-real floor and the same-size FWD, averaged over ``draws``."""
    real_p, gen_p = packets(real_x, level, wavelet), packets(gen_x, level, wavelet)

    def stats(coefficients: np.ndarray, idx: np.ndarray) -> Optional[PacketStats]:
        return stats_of(coefficients, idx) if len(idx) >= 2 else None

    splits = [halves(real, categories, seed, d) for d in range(draws)]
    out: dict[str, dict] = {}
    for g, (name, r_idx) in enumerate(real_groups.items()):
        g_idx = gen_groups.get(name, np.array([], np.int64))
        floors, same, paired = [], [], []
        for d, split in enumerate(splits):
            a, b = split[name]
            sub, was_paired = generated_for(real, b, generated, g_idx, np.random.default_rng(mix_seed(seed, d, g)))
            stats_a = stats(real_p, a)
            floors.append(frechet_wavelet_distance(stats_a, stats(real_p, b)))
            same.append(frechet_wavelet_distance(stats_a, stats(gen_p, sub)))
            paired.append(was_paired)
        a, b = splits[0][name]
        floor, same_mean = _nanmean(floors), _nanmean(same)
        ratio = same_mean / floor if floor > 0 and math.isfinite(same_mean) else float("nan")
        out[name] = {"n_real": int(len(r_idx)), "n_generated": int(len(g_idx)),
                     "fwd": frechet_wavelet_distance(stats(real_p, r_idx), stats(gen_p, g_idx)),
                     "n_half_a": int(len(a)), "n_half_b": int(len(b)), "floor": floor, "floor_sd": _nansd(floors),
                     "same_size": same_mean, "same_size_sd": _nansd(same), "floor_draws": floors,
                     "same_size_draws": same, "paired": bool(all(paired)), "ratio": ratio,
                     "met": bool(ratio <= FLOOR_FACTOR) if math.isfinite(ratio) else None}
    return out


def sample_ratios(real: ImageSet, real_x: np.ndarray, pool_x: np.ndarray, pool_groups: dict[str, np.ndarray],
                  categories: Sequence[str], floors: dict[str, float], level: int, seed: int = 0, halves_draws: int = 1,
                  draws: int = 30, wavelet: str = WAVELET) -> dict[str, np.ndarray]:
    """Per group, ``draws`` same-size FWD/floor ratios with random sets of ``pool_x`` images (e.g. real training
    images) in place of the generated ones: what new real images score on the card's FWD target.

    Each draw replaces half B of every one of the card's ``halves_draws`` real splits by as many pool images of
    each category as B has, and divides the mean FWD(A, pool set) by the card's ``floors[group]``, as
    :func:`fwd_table` does for the generated images. A group whose pool is smaller than its half B is all NaN.
    """
    real_p, pool_p = packets(real_x, level, wavelet), packets(pool_x, level, wavelet)
    splits = [halves(real, categories, seed, d) for d in range(halves_draws)]
    rng = np.random.default_rng(mix_seed(seed, SAMPLE_STREAM))
    out: dict[str, np.ndarray] = {}
    for name in [*categories, OVERALL]:
        members = list(categories) if name == OVERALL else [name]
        ratios = np.full(draws, np.nan)
        out[name] = ratios
        if any(len(pool_groups.get(c, ())) < len(splits[0][c][1]) for c in members) or not floors.get(name, 0) > 0:
            continue
        stats_a = [stats_of(real_p, split[name][0]) for split in splits]
        for k in range(draws):
            same = [frechet_wavelet_distance(a, stats_of(pool_p, np.concatenate(
                [rng.choice(pool_groups[c], len(split[c][1]), replace=False) for c in members])))
                for a, split in zip(stats_a, splits)]
            ratios[k] = _nanmean(same) / floors[name]
    return out


def _nanmean(x: Sequence[float]) -> float:
    x = [v for v in x if math.isfinite(v)]
    return float(np.mean(x)) if x else float("nan")


def _nansd(x: Sequence[float]) -> float:
    x = [v for v in x if math.isfinite(v)]
    return float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")
