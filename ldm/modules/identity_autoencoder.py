"""A weightless stand-in for the autoencoder: tiny demo models train in (rearranged) pixel space."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn


class IdentityAutoencoder(nn.Module):
    """``encode``/``decode`` are the identity; the "latent" is the image in [-1, 1].

    Options (all exactly invertible, no weights):
      * ``channels=1``: grey levels (``encode`` averages RGB, ``decode`` repeats the grey channel);
      * ``downscale`` > 1: fold each ``downscale x downscale`` pixel block into channels
        (``pixel_unshuffle``), so a tiny UNet runs at 1/downscale of the image size;
      * ``scale_factor``: multiplies the latent (as AutoencoderKL's does) to bring it near unit variance;
        a list gives one factor per latent channel;
      * ``shift_factor``: subtracted before scaling, to centre the latent (``training.latent_stats``
        measures both on a training split); a list gives one per latent channel.
    """

    def __init__(self, channels: int = 3, downscale: int = 1,
                 scale_factor: Union[float, Sequence[float]] = 1.0,
                 shift_factor: Union[float, Sequence[float]] = 0.0) -> None:
        super().__init__()
        if int(downscale) < 1:
            raise ValueError(f"downscale must be >= 1, got {downscale}")
        self.channels = channels
        self.downscale = int(downscale)
        scales = [float(s) for s in scale_factor] if isinstance(scale_factor, (list, tuple)) else [float(scale_factor)]
        latent_channels = channels * self.downscale ** 2
        if len(scales) not in (1, latent_channels):
            raise ValueError(f"scale_factor needs 1 or {latent_channels} values, got {len(scales)}")
        shifts = [float(s) for s in shift_factor] if isinstance(shift_factor, (list, tuple)) else [float(shift_factor)]
        if len(shifts) not in (1, latent_channels):
            raise ValueError(f"shift_factor needs 1 or {latent_channels} values, got {len(shifts)}")
        if not all(math.isfinite(v) for v in scales + shifts) or min(abs(v) for v in scales) == 0:
            raise ValueError("scale_factor and shift_factor must be finite and scale_factor non-zero")
        self.scale_factor = scales[0] if len(scales) == 1 else scales
        self.shift_factor = shifts[0] if len(shifts) == 1 else shifts
        self._scales = torch.tensor(scales).view(1, -1, 1, 1)
        self._shifts = torch.tensor(shifts).view(1, -1, 1, 1)

    def _scale(self, z: torch.Tensor) -> torch.Tensor:
        return self._scales.to(device=z.device, dtype=z.dtype)

    def _shift(self, z: torch.Tensor) -> torch.Tensor:
        return self._shifts.to(device=z.device, dtype=z.dtype)

    def encode(self, x: torch.Tensor, generator: Optional[torch.Generator] = None, sample: bool = True):
        if self.channels == 1 and x.shape[1] == 3:
            x = x.mean(1, keepdim=True)
        z = F.pixel_unshuffle(x, self.downscale) if self.downscale > 1 else x
        return (z - self._shift(z)) * self._scale(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        z = z / self._scale(z) + self._shift(z)
        x = F.pixel_shuffle(z, self.downscale) if self.downscale > 1 else z
        return x.expand(-1, 3, -1, -1) if self.channels == 1 else x
