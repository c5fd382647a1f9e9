"""A pixel-space stand-in for the autoencoder (tiny demo models train without a VAE)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class IdentityAutoencoder(nn.Module):
    """``encode``/``decode`` are the identity; the "latent" is the image in [-1, 1]."""

    def __init__(self, channels: int = 3, **_: object) -> None:
        super().__init__()
        self.channels = channels
        self.downscale = 1
        self.scale_factor = 1.0

    def encode(self, x: torch.Tensor, generator: Optional[torch.Generator] = None, sample: bool = True):
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z
