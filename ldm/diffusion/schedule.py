"""The DDPM noise schedule and the 12 buffers the original ``LatentDiffusion`` stores."""
from __future__ import annotations

import math

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


def schedule_buffers(timesteps: int = 1000, linear_start: float = 0.00085, linear_end: float = 0.012,
                     schedule: str = "linear") -> dict[str, torch.Tensor]:
    """All 12 schedule buffers as float32 tensors, computed in float64 like the original."""
    betas = make_betas(schedule, timesteps, linear_start, linear_end)
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
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
    }
    return {k: torch.tensor(values[k], dtype=torch.float32) for k in BUFFER_NAMES}


def min_snr_weight(alphas_cumprod_t: torch.Tensor, gamma: float, parameterization: str = "eps") -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023): the implied clean-sample error is weighted by
    ``min(SNR, gamma)``. The plain loss of an eps / v / x0 prediction is that error times SNR / SNR + 1 / 1,
    so the weight on it is ``min(SNR, gamma)`` divided by that. For eps: 1 where the noise dominates,
    less than 1 on the nearly clean timesteps, whose targets are mostly unpredictable pixel noise.
    """
    snr = alphas_cumprod_t.float() / (1 - alphas_cumprod_t.float())
    scale = {"eps": snr, "v": snr + 1, "x0": torch.ones_like(snr)}[parameterization]
    return snr.clamp(max=float(gamma)) / scale


class NoiseSchedule(nn.Module):
    """Holds the schedule buffers (state-dict compatible with the original ``diffusion`` part)."""

    def __init__(self, linear_start: float = 0.00085, linear_end: float = 0.012, timesteps: int = 1000,
                 beta_schedule: str = "linear") -> None:
        super().__init__()
        self.num_timesteps = int(timesteps)
        for name, value in schedule_buffers(timesteps, linear_start, linear_end, beta_schedule).items():
            self.register_buffer(name, value)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Noise ``x0`` to timestep ``t`` (one integer per sample)."""
        noise = torch.randn_like(x0) if noise is None else noise
        a = self.sqrt_alphas_cumprod.to(x0.device)[t].view(-1, *([1] * (x0.dim() - 1)))
        s = self.sqrt_one_minus_alphas_cumprod.to(x0.device)[t].view(-1, *([1] * (x0.dim() - 1)))
        return a.to(x0.dtype) * x0 + s.to(x0.dtype) * noise
