"""The diffusion process: the DDPM noise schedule (the 12 buffers the original ``LatentDiffusion`` stores),
what the model predicts, and what the unconditional branch of classifier-free guidance drops."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

BUFFER_NAMES = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


def make_betas(schedule: str, timesteps: int, linear_start: float, linear_end: float,
               cosine_s: float = 8e-3) -> np.ndarray:
    """Beta schedule in float64. ``linear`` is SD's scaled-linear (linear in sqrt(beta))."""
    if schedule == "linear":
        return np.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=np.float64) ** 2
    if schedule == "cosine":
        steps = np.arange(timesteps + 1, dtype=np.float64) / timesteps + cosine_s
        alphas = np.cos(steps / (1 + cosine_s) * math.pi / 2) ** 2
        alphas = alphas / alphas[0]
        return np.clip(1 - alphas[1:] / alphas[:-1], 0, 0.999)
    raise ValueError(f"unknown beta schedule {schedule!r}; use 'linear' or 'cosine'")


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Lin et al. 2024, Algorithm 1: shift and scale ``sqrt(alphas_cumprod)`` so that the last is exactly 0
    (no signal left at ``t = T - 1``) and the first is unchanged; returns the matching betas."""
    root = np.sqrt(np.cumprod(1.0 - betas))
    first, last = root[0], root[-1]
    ac = ((root - last) * first / (first - last)) ** 2
    return 1.0 - np.concatenate([ac[:1], ac[1:] / ac[:-1]])


def shift_snr(betas: np.ndarray, factor: float) -> np.ndarray:
    """The betas whose signal-to-noise ratio ``alphas_cumprod / (1 - alphas_cumprod)`` is ``factor`` times that of
    ``betas`` at every timestep (Hoogeboom et al. 2023: ``(base / resolution) ** 2`` keeps a schedule made for a
    base resolution as noisy for the image's coarse structure at a higher one); zero SNR stays zero."""
    ac = np.cumprod(1.0 - betas)
    shifted = factor * ac / (1.0 - ac + factor * ac)
    return 1.0 - np.concatenate([shifted[:1], shifted[1:] / shifted[:-1]])


def schedule_buffers(timesteps: int = 1000, linear_start: float = 0.00085, linear_end: float = 0.012,
                     schedule: str = "linear", zero_terminal_snr: bool = False,
                     snr_shift: float = 1.0) -> dict[str, torch.Tensor]:
    """All 12 schedule buffers as float32 tensors, computed in float64 like the original."""
    betas = make_betas(schedule, timesteps, linear_start, linear_end)
    if zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    if snr_shift != 1.0:
        betas = shift_snr(betas, snr_shift)
    alphas = 1.0 - betas
    ac = np.cumprod(alphas)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)  # v_posterior = 0 in the original
    values = {
        "betas": betas,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": np.sqrt(ac),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "log_one_minus_alphas_cumprod": np.log(1.0 - ac),
        "sqrt_recip_alphas_cumprod": np.sqrt(np.divide(1.0, ac, out=np.full_like(ac, np.inf), where=ac > 0)),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(np.divide(1.0 - ac, ac, out=np.full_like(ac, np.inf), where=ac > 0)),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
    }
    return {k: torch.tensor(values[k], dtype=torch.float32) for k in BUFFER_NAMES}


def min_snr_weight(alphas_cumprod_t: torch.Tensor, gamma: float, parameterization: str = "eps",
                   plus_one: bool = False) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023): the implied clean-sample error is weighted by
    ``min(SNR, gamma)``. The plain loss of an eps / v / x0 prediction is that error times SNR / SNR + 1 / 1,
    so the weight on it is ``min(SNR, gamma)`` divided by that. For eps: 1 where the noise dominates,
    less than 1 on the nearly clean timesteps, whose targets are mostly unpredictable pixel noise.

    ``plus_one`` weights the clean-sample error by ``min(SNR + 1, gamma)`` instead: for v that is the
    plain v-loss wherever ``SNR + 1 <= gamma``. The published weight is 0 at zero SNR, which would leave
    the last timestep of a zero-terminal-SNR schedule (where the image's brightness is chosen) untrained.
    """
    ac = alphas_cumprod_t.float()
    snr = ac / (1 - ac)
    scale = {"eps": snr, "v": snr + 1, "x0": torch.ones_like(snr)}[parameterization]
    return (snr + float(plus_one)).clamp(max=float(gamma)) / scale


PARAMETERIZATIONS = ("eps", "v")
SPACINGS = ("leading", "trailing")
UNCOND_PARTS = ("prompt", "tokens", "downsampler")


class NoiseSchedule(nn.Module):
    """The schedule buffers (state-dict compatible with the original ``diffusion`` part) and the process
    settings that training and sampling must share:

    * ``zero_terminal_snr``: rescale the betas so that no signal is left at the last timestep (Lin et al.
      2024); needs ``parameterization: v``;
    * ``snr_shift``: multiply every timestep's signal-to-noise ratio by this factor (:func:`shift_snr`; 1: none);
    * ``parameterization``: the model predicts ``eps`` (the original) or ``v``;
    * ``timestep_spacing``: the samplers' grid, ``leading`` (the original) or ``trailing`` (starts at T - 1);
    * ``offset_noise``: the training noise and the sampler's starting noise get a per-image, per-channel
      constant of this standard deviation added (Guttenberg 2023);
    * ``uncond_drop``: what the unconditional branch of guidance replaces by its null value: ``prompt`` (the
      empty prompt), ``tokens`` (the null grounding tokens), ``downsampler`` (zero downsampler features);
      training drops the same parts together (``train.cond_drop_prob``).
    """

    def __init__(self, linear_start: float = 0.00085, linear_end: float = 0.012, timesteps: int = 1000,
                 beta_schedule: str = "linear", zero_terminal_snr: bool = False, parameterization: str = "eps",
                 timestep_spacing: str = "leading", offset_noise: float = 0.0,
                 uncond_drop: Sequence[str] = ("prompt", "tokens"), snr_shift: float = 1.0) -> None:
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {', '.join(PARAMETERIZATIONS)}, "
                             f"got {parameterization!r}")
        if zero_terminal_snr and parameterization == "eps":
            raise ValueError("zero_terminal_snr needs parameterization: v (an eps-model cannot denoise pure noise)")
        if timestep_spacing not in SPACINGS:
            raise ValueError(f"timestep_spacing must be one of {', '.join(SPACINGS)}, got {timestep_spacing!r}")
        if not (math.isfinite(float(offset_noise)) and 0.0 <= float(offset_noise) <= 1.0):
            raise ValueError(f"offset_noise must lie in [0, 1], got {offset_noise!r}")
        if not (math.isfinite(float(snr_shift)) and float(snr_shift) > 0.0):
            raise ValueError(f"snr_shift must be a positive number, got {snr_shift!r}")
        unknown = [p for p in uncond_drop if p not in UNCOND_PARTS]
        if unknown or not uncond_drop:
            raise ValueError(f"uncond_drop must be a non-empty list of {', '.join(UNCOND_PARTS)}, "
                             f"got {list(uncond_drop)}")
        self.num_timesteps = int(timesteps)
        self.zero_terminal_snr = bool(zero_terminal_snr)
        self.parameterization = str(parameterization)
        self.timestep_spacing = str(timestep_spacing)
        self.offset_noise = float(offset_noise)
        self.uncond_drop = tuple(str(p) for p in uncond_drop)
        self.snr_shift = float(snr_shift)
        buffers = schedule_buffers(timesteps, linear_start, linear_end, beta_schedule, self.zero_terminal_snr,
                                   self.snr_shift)
        for name, value in buffers.items():
            self.register_buffer(name, value)

    def _per_sample(self, values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return values.to(like.device)[t].view(-1, *([1] * (like.dim() - 1))).to(like.dtype)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Noise ``x0`` to timestep ``t`` (one integer per sample)."""
        noise = torch.randn_like(x0) if noise is None else noise
        a = self._per_sample(self.sqrt_alphas_cumprod, t, x0)
        s = self._per_sample(self.sqrt_one_minus_alphas_cumprod, t, x0)
        return a * x0 + s * noise

    def noise(self, shape: Sequence[int], generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> torch.Tensor:
        """Standard normal noise plus ``offset_noise`` times a per-sample, per-channel normal constant."""
        noise = torch.randn(tuple(shape), generator=generator, device=device)
        return self.add_offset(noise, generator)

    def add_offset(self, noise: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``noise`` plus the offset component (drawn from ``generator`` after the noise itself); unchanged
        without offset noise."""
        if self.offset_noise == 0.0:
            return noise
        offset = torch.randn((*noise.shape[:2], *([1] * (noise.dim() - 2))), generator=generator,
                             device=noise.device, dtype=noise.dtype)
        return noise + self.offset_noise * offset

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the model is trained to output at ``q_sample(x0, t, noise)``: the noise, or
        ``v = sqrt(a) noise - sqrt(1 - a) x0``."""
        if self.parameterization == "eps":
            return noise
        a = self._per_sample(self.sqrt_alphas_cumprod, t, x0)
        s = self._per_sample(self.sqrt_one_minus_alphas_cumprod, t, x0)
        return a * noise - s * x0

    def sampling_kwargs(self) -> dict:
        """The keyword arguments every sampler of ``ldm.diffusion.samplers`` takes from the process."""
        return {"prediction": self.parameterization, "spacing": self.timestep_spacing}
