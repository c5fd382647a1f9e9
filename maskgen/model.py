"""The mask DDPM: the small UNet plus the project's noise schedule, its loss and its ``eps_fn``.

The schedule is ``ldm.diffusion.schedule.NoiseSchedule`` and sampling goes through
``ldm.diffusion.samplers`` (DDIM / PLMS / DPM-Solver++), so there is one implementation of each.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn

from dataset.categories import Category, categories_from_config
from ldm.diffusion.samplers import EpsFn
from ldm.diffusion.schedule import NoiseSchedule, min_snr_weight
from runtime.errors import UserError
from runtime.safe_load import first_line

from .unet import MaskUNet, build_unet

PARAMETERIZATIONS = ("eps", "v", "x0")


class MaskDiffusion(nn.Module):
    """DDPM over masks in [-1, 1], conditioned on a class id.

    The UNet predicts ``eps`` (noise), ``v`` = sqrt(a) eps - sqrt(1-a) x0 (Salimans & Ho 2022) or
    ``x0``, as ``diffusion.parameterization`` says; :meth:`eps_fn` always hands the samplers the
    equivalent noise. ``v`` is the default: with eps-prediction a small, briefly trained network
    makes large clean-mask errors at high noise (x0 = (x - sqrt(1-a) eps) / sqrt(a) amplifies the
    noise error by 1/sqrt(a)), and the sampled masks come out as speckle.
    """

    def __init__(self, model_cfg: Mapping[str, Any], diffusion_cfg: Mapping[str, Any], num_classes: int) -> None:
        super().__init__()
        self.parameterization = str(diffusion_cfg.get("parameterization", "eps"))
        if self.parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"diffusion.parameterization must be one of {', '.join(PARAMETERIZATIONS)}, "
                             f"got {self.parameterization!r}")
        self.unet: MaskUNet = build_unet(model_cfg, num_classes)
        self.schedule = NoiseSchedule(linear_start=float(diffusion_cfg["linear_start"]),
                                      linear_end=float(diffusion_cfg["linear_end"]),
                                      timesteps=int(diffusion_cfg["timesteps"]),
                                      beta_schedule=str(diffusion_cfg["beta_schedule"]))
        self.num_classes = num_classes

    @property
    def null_class(self) -> int:
        return self.unet.null_class

    def loss(self, x0: torch.Tensor, y: torch.Tensor, p_uncond: float = 0.0,
             generator: Optional[torch.Generator] = None, min_snr_gamma: Optional[float] = None) -> torch.Tensor:
        """Mean squared error of the prediction at uniformly drawn timesteps.

        ``min_snr_gamma`` weights each sample as Min-SNR-gamma (Hang et al. 2023): the implied
        clean-mask error is weighted by min(SNR, gamma), which stops the nearly noise-free steps
        from dominating the gradient (they matter least for the shape of a mask).
        """
        b = x0.shape[0]
        t = torch.randint(0, self.schedule.num_timesteps, (b,), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        if p_uncond > 0:
            drop = torch.rand(b, generator=generator).to(x0.device) < p_uncond
            y = torch.where(drop, torch.full_like(y, self.null_class), y)
        per_sample = self.per_sample_loss(x0, y, t, noise)
        if min_snr_gamma:
            ac = self.schedule.alphas_cumprod.to(x0.device)[t]
            per_sample = per_sample * min_snr_weight(ac, min_snr_gamma, self.parameterization)
        return per_sample.mean()

    def _coefs(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sqrt(a_t) and sqrt(1 - a_t) shaped to broadcast over ``like``."""
        sa = self.schedule.sqrt_alphas_cumprod.to(like.device)[t].view(-1, 1, 1, 1).to(like.dtype)
        sb = self.schedule.sqrt_one_minus_alphas_cumprod.to(like.device)[t].view(-1, 1, 1, 1).to(like.dtype)
        return sa, sb

    def fixed_loss(self, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Unweighted loss for given timesteps and noise (used to compare before/after training)."""
        return self.per_sample_loss(x0, y, t, noise).mean()

    def per_sample_loss(self, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the prediction, one value per sample."""
        xt = self.schedule.q_sample(x0, t, noise)
        if self.parameterization == "eps":
            target = noise
        elif self.parameterization == "v":
            sa, sb = self._coefs(t, x0)
            target = sa * noise - sb * x0
        else:
            target = x0
        return (self.unet(xt, t, y) - target).pow(2).flatten(1).mean(1)

    def to_eps_x0(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network output at ``(x, t)`` as (noise, clean mask)."""
        sa, sb = self._coefs(t, x)
        if self.parameterization == "eps":
            return out, (x - sb * out) / sa
        if self.parameterization == "v":
            return sb * x + sa * out, sa * x - sb * out
        return (x - sa * out) / sb, out

    def eps_fn(self, y: torch.Tensor, guidance: float = 1.0, clip_x0: bool = True) -> EpsFn:
        """``eps_fn(x, t)`` for the shared samplers.

        ``guidance`` != 1 mixes conditional and null-class predictions (classifier-free guidance).
        ``clip_x0`` clamps the implied clean mask to [-1, 1] and returns the noise consistent with
        the clamped value, which keeps the samplers' ``pred_x0`` inside the data range.
        """
        null = torch.full_like(y, self.null_class)

        def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if guidance == 1.0:
                out = self.unet(x, t, y)
            else:  # the conversions below are affine in the output, so mixing here = mixing eps
                both = self.unet(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
                o_c, o_u = both.chunk(2)
                out = o_u + guidance * (o_c - o_u)
            eps, x0 = self.to_eps_x0(out, x, t)
            if clip_x0:
                sa, sb = self._coefs(t, x)
                eps = (x - sa * x0.clamp(-1.0, 1.0)) / sb
            return eps

        return fn


def categories_to_list(categories: Sequence[Category]) -> list[dict[str, Any]]:
    return [{"name": c.name, "prefix": c.prefix, "index": c.index, "prompt": c.prompt} for c in categories]


def build_model(cfg: Mapping[str, Any], num_classes: int) -> MaskDiffusion:
    try:
        return MaskDiffusion(cfg["model"], cfg["diffusion"], num_classes)
    except (ValueError, TypeError) as exc:
        raise UserError(f"model config: {exc}") from None


def model_from_checkpoint(ckpt: Mapping[str, Any], weights: str = "ema"
                          ) -> tuple[MaskDiffusion, list[Category]]:
    """Rebuild the model (``weights`` ``ema`` or ``raw``) and its category list."""
    if weights not in ("ema", "raw"):
        raise UserError(f"--weights must be 'ema' or 'raw', got {weights!r}")
    where = ckpt.get("path", "checkpoint")
    try:
        cats = categories_from_config(ckpt["categories"], where=f"{where} categories")
        model = build_model(ckpt["config"], len(cats))
        state = ckpt["ema"] if weights == "ema" and ckpt.get("ema") is not None else ckpt["model"]
        model.load_state_dict(state)
    except UserError:
        raise
    except Exception as exc:  # a damaged or foreign checkpoint fails in many ways
        raise UserError(f"{where}: weights do not fit the model its config describes ({type(exc).__name__}: "
                        f"{first_line(exc)}); retrain with python -m maskgen.train") from None
    return model.eval(), cats
