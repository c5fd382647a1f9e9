"""A mask-guided upscaler: the generator's small image, resized to the stored size, sharpened along its mask.

A pixel-space generator at ``side`` px cannot hold a scratch one or two stored pixels wide: resized back
to the stored ``size`` the defect's edge is smeared over its surroundings. The mask is known at the stored
size, so a small convolutional network that sees the bicubic-resized image and the full-size mask can put
the edge back. It predicts a residual on top of bicubic (its last layer starts at zero, so an untrained
upscaler is bicubic) and is trained on real pairs sent through the same round trip
(``python -m training.upscaler``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class MaskUpscaler(nn.Module):
    """Residual CNN over (bicubic image, mask) at the stored size; ``side`` and ``size`` say what it was trained for."""

    def __init__(self, side: int = 64, size: int = 200, width: int = 32, depth: int = 5):
        super().__init__()
        if depth < 2 or width < 1 or side < 1 or size <= side:
            raise ValueError(f"MaskUpscaler needs depth >= 2, width >= 1 and size > side >= 1; got depth {depth}, "
                             f"width {width}, side {side}, size {size}")
        self.side, self.size = int(side), int(size)
        layers: list[nn.Module] = [nn.Conv2d(2, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(width, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """``images`` B x C x H x W in [0, 1] (already resized to the stored size), ``masks`` B x H x W in {0, 1}
        -> B x C x H x W in [0, 1]; the residual is computed from the channels' mean (the grey level) and added
        to every channel."""
        b, _, h, w = images.shape
        if tuple(masks.shape) != (b, h, w):
            raise ValueError(f"masks must be {b} x {h} x {w} to match the images, got {tuple(masks.shape)}")
        grey = images.mean(1, keepdim=True)
        residual = self.net(torch.cat([grey * 2 - 1, masks.to(images.dtype)[:, None] * 2 - 1], dim=1))
        return (images + residual).clamp(0, 1)


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """B x C x H x W in [0, 1] -> B x C x size x size (bicubic, antialiased, clamped)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


@torch.no_grad()
def upscale_images(images: torch.Tensor, size: int, masks: Optional[torch.Tensor] = None,
                   upscaler: Optional[MaskUpscaler] = None) -> torch.Tensor:
    """Generated B x C x h x w images in [0, 1] -> B x C x size x size.

    Bicubic; with an ``upscaler`` and a ``size`` above the model's, the bicubic image at the upscaler's
    trained size is first sharpened along ``masks`` (B x H x W, any size: resized nearest), then resized
    to ``size`` if that differs.
    """
    if upscaler is None or size <= images.shape[-1]:
        return resize_images(images, size)
    if masks is None:
        raise ValueError("the mask-guided upscaler needs the masks")
    weight = next(upscaler.parameters())
    big = resize_images(images, upscaler.size).to(weight)
    sharp = upscaler(big, resize_masks(masks, upscaler.size).to(weight))
    return resize_images(sharp.to(images.dtype), size)


def resize_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    """B x H x W masks -> B x size x size (nearest), as float in {0, 1}."""
    masks = masks.float()
    if masks.shape[-1] == size and masks.shape[-2] == size:
        return masks
    return F.interpolate(masks[:, None], size=(size, size), mode="nearest")[:, 0]
