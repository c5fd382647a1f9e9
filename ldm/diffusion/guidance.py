"""Classifier-free guidance as a ``model_fn`` for the samplers (eps or v: guidance is linear in both).

By default the unconditional branch, as in the original GLIGEN samplers, gets the empty-prompt context
and the null grounding tokens but keeps the downsampler features (those are concatenated to the latent,
and the original passes ``grounding_extra_input`` to both branches); ``diffusion.uncond_drop`` says
what it drops (``DefFillerPipeline.conditioning``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from runtime.errors import UserError

from .samplers import EpsFn

#: the paper's classifier-free guidance weight: the default of every command and call that generates
DEFAULT_GUIDANCE_SCALE = 3.0


@dataclass
class Conditioning:
    """Everything the UNet needs besides ``x`` and ``t``, computed once per batch."""

    context: torch.Tensor                      # B x 77 x context_dim
    grounding_tokens: torch.Tensor             # B x N x context_dim
    extra: Optional[torch.Tensor] = None       # B x C x h x w, downsampler output (or None)

    def cat(self, other: "Conditioning") -> "Conditioning":
        extra = None if self.extra is None else torch.cat([self.extra, other.extra])
        return Conditioning(torch.cat([self.context, other.context]),
                            torch.cat([self.grounding_tokens, other.grounding_tokens]), extra)


def check_interval(value) -> tuple[int, int]:
    """``(lo, hi)`` timesteps with ``0 <= lo <= hi``, or a one-line error."""
    try:
        lo, hi = (int(v) for v in value)
        ok = all(float(v) == int(v) for v in value) and 0 <= lo <= hi
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise UserError(f"--guidance_interval needs two whole timesteps LO HI with 0 <= LO <= HI, got {value!r}")
    return lo, hi


def check_low(value) -> tuple[float, int]:
    """``(scale, size)``: a finite scale and a box size of 0 (the mean) or an odd number of pixels."""
    try:
        scale, size = value
        ok = math.isfinite(float(scale)) and float(size) == int(size) and (int(size) == 0 or int(size) % 2 == 1)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok or int(size) < 0:
        raise UserError(f"--guidance_low needs SCALE SIZE: a finite scale for the guidance's low frequencies and "
                        f"a box size of 0 (the image mean) or an odd number of pixels, got {value!r}")
    return float(scale), int(size)


def low_pass(x: torch.Tensor, size: int) -> torch.Tensor:
    """Each image's low frequencies: a ``size`` x ``size`` box average (odd ``size``, edges replicated),
    or with ``size`` 0 the spatial mean per channel."""
    if size == 0:
        return x.mean(dim=(-2, -1), keepdim=True)
    pad = size // 2
    return F.avg_pool2d(F.pad(x, (pad, pad, pad, pad), mode="replicate"), size, stride=1)


def combine(out_u: torch.Tensor, out_c: torch.Tensor, scale: float,
            low: Optional[tuple[float, int]] = None) -> torch.Tensor:
    """Classifier-free guidance, ``out_u + scale (out_c - out_u)``. With ``low = (low_scale, size)`` the
    low-pass part of the difference (:func:`low_pass`) gets ``low_scale`` instead of ``scale``, so the
    image's coarse layout and brightness are guided less than its detail (frequency-split guidance, as
    in Sadat et al. 2025); ``low_scale == scale`` is plain guidance."""
    diff = out_c - out_u
    if low is None:
        return out_u + scale * diff
    low_scale, size = low
    coarse = low_pass(diff, size)
    return out_u + scale * (diff - coarse) + low_scale * coarse


def combine_per_sample(out_u: torch.Tensor, out_c: torch.Tensor, t: torch.Tensor, scale: float,
                       interval: Optional[tuple[int, int]] = None,
                       low: Optional[tuple[float, int]] = None) -> torch.Tensor:
    """:func:`combine` where each sample's timestep ``t`` lies in ``interval`` (all of them when it is
    ``None``), the conditional output ``out_c`` elsewhere: what :func:`guided_eps_fn` gives for a batch of
    mixed timesteps."""
    guided = combine(out_u, out_c, scale, low)
    if interval is None:
        return guided
    inside = (t >= interval[0]) & (t <= interval[1])
    return torch.where(inside.view(-1, *([1] * (out_c.dim() - 1))), guided, out_c)


def guided_eps_fn(unet: torch.nn.Module, cond: Conditioning, uncond: Optional[Conditioning],
                  guidance_scale: float, batched: bool = True,
                  interval: Optional[tuple[int, int]] = None,
                  low: Optional[tuple[float, int]] = None) -> EpsFn:
    """out = out_u + w (out_c - out_u) (:func:`combine`; ``low`` guides the low frequencies with another
    weight). With ``batched`` both branches run as one forward. With ``interval = (lo, hi)`` guidance
    applies only at timesteps ``lo <= t <= hi`` (Kynkaanniemi et al. 2024); elsewhere the conditional
    output alone is used."""
    use_cfg = uncond is not None and (guidance_scale != 1.0 or (low is not None and low[0] != 1.0))
    both = cond.cat(uncond) if (use_cfg and batched) else None

    def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        outside = interval is not None and not interval[0] <= int(t[0]) <= interval[1]
        if not use_cfg or outside:
            return unet(x, t, cond.context, cond.grounding_tokens, cond.extra)
        if batched:
            out = unet(torch.cat([x, x]), torch.cat([t, t]), both.context, both.grounding_tokens, both.extra)
            e_c, e_u = out.chunk(2)
        else:
            e_c = unet(x, t, cond.context, cond.grounding_tokens, cond.extra)
            e_u = unet(x, t, uncond.context, uncond.grounding_tokens, uncond.extra)
        return combine(e_u, e_c, guidance_scale, low)

    return eps_fn


def original_eps_fn(unet: torch.nn.Module, sem: torch.Tensor, context: torch.Tensor, uc: torch.Tensor,
                    scale: float) -> EpsFn:
    """Guidance the way the original DefFiller computes it (the benchmarks' reference): two forwards per
    evaluation, with the mask encoder and the downsampler run inside each."""
    def eps_fn(x, t):
        b = x.shape[0]
        extra = unet.downsample_grounding(sem)
        e_c = unet(x, t, context, unet.encode_grounding(sem, torch.ones(b, device=x.device)), extra)
        null = unet.encode_grounding(torch.zeros_like(sem), torch.zeros(b, device=x.device))
        e_u = unet(x, t, uc, null, unet.downsample_grounding(sem))
        return e_u + scale * (e_c - e_u)
    return eps_fn
