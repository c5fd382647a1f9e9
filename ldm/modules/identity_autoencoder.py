"""A weightless stand-in for the autoencoder: tiny demo models train in (rearranged) pixel space."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn


def _haar(x: torch.Tensor) -> torch.Tensor:
    """One orthonormal 2-D Haar level: B x C x H x W -> B x 4C x H/2 x W/2, bands (LL, LH, HL, HH) per channel."""
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    bands = torch.stack([a + b + c + d, a - b + c - d, a + b - c - d, a - b - c + d], dim=2) / 2
    return bands.flatten(1, 2)


def _inverse_haar(z: torch.Tensor) -> torch.Tensor:
    bsz, c4, h, w = z.shape
    ll, lh, hl, hh = z.view(bsz, c4 // 4, 4, h, w).unbind(2)
    x = z.new_empty(bsz, c4 // 4, 2 * h, 2 * w)
    x[..., 0::2, 0::2] = (ll + lh + hl + hh) / 2
    x[..., 0::2, 1::2] = (ll - lh + hl - hh) / 2
    x[..., 1::2, 0::2] = (ll + lh - hl - hh) / 2
    x[..., 1::2, 1::2] = (ll - lh - hl + hh) / 2
    return x


class IdentityAutoencoder(nn.Module):
    """``encode``/``decode`` are the identity; the "latent" is the image in [-1, 1].

    Options (all exactly invertible, no weights):
      * ``channels=1``: grey levels (``encode`` averages RGB, ``decode`` repeats the grey channel);
      * ``downscale`` > 1: fold each ``downscale x downscale`` pixel block into channels
        (``pixel_unshuffle``), so a tiny UNet runs at 1/downscale of the image size;
      * ``haar=True`` (with ``downscale=2``): fold with an orthonormal Haar transform instead, giving
        an average band and three detail bands per channel;
      * ``scale_factor``: multiplies the latent (as AutoencoderKL's does) to bring it near unit variance;
        a list gives one factor per latent channel (e.g. per Haar band, so that the small detail bands
        are not drowned by the denoiser's errors).
    """

    def __init__(self, channels: int = 3, downscale: int = 1, scale_factor: Union[float, Sequence[float]] = 1.0,
                 haar: bool = False, **_: object) -> None:
        super().__init__()
        if int(downscale) < 1:
            raise ValueError(f"downscale must be >= 1, got {downscale}")
        if haar and int(downscale) != 2:
            raise ValueError("haar=True needs downscale=2 (one Haar level)")
        self.channels = channels
        self.downscale = int(downscale)
        self.haar = bool(haar)
        scales = [float(s) for s in scale_factor] if isinstance(scale_factor, (list, tuple)) else [float(scale_factor)]
        latent_channels = channels * self.downscale ** 2
        if len(scales) not in (1, latent_channels):
            raise ValueError(f"scale_factor needs 1 or {latent_channels} values, got {len(scales)}")
        self.scale_factor = scales[0] if len(scales) == 1 else scales
        self._scales = torch.tensor(scales).view(1, -1, 1, 1)

    def _scale(self, z: torch.Tensor) -> torch.Tensor:
        return self._scales.to(device=z.device, dtype=z.dtype)

    def encode(self, x: torch.Tensor, generator: Optional[torch.Generator] = None, sample: bool = True):
        if self.channels == 1 and x.shape[1] == 3:
            x = x.mean(1, keepdim=True)
        if self.haar:
            z = _haar(x)
        else:
            z = F.pixel_unshuffle(x, self.downscale) if self.downscale > 1 else x
        return z * self._scale(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        z = z / self._scale(z)
        if self.haar:
            x = _inverse_haar(z)
        else:
            x = F.pixel_shuffle(z, self.downscale) if self.downscale > 1 else z
        return x.expand(-1, 3, -1, -1) if self.channels == 1 else x
