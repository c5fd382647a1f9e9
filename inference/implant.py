"""Implant mode: a real defect-free background with a generated defect inside the mask.

At every sampler step the latent outside the (dilated) mask is replaced by the background latent
noised to the current level (RePaint/GLIGEN-style latent blending), so the generated defect is
shaped by and harmonised with the real surroundings. After decoding, pixels outside the dilated
mask are taken from the background itself (the VAE would otherwise alter them slightly), with a
few pixels of feathering at the boundary.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dataset.files import IMAGE_EXTS, list_by_stem
from dataset.io import read_image
from runtime.errors import UserError


def load_background(path: Path, size: int) -> torch.Tensor:
    """Background image as 1 x 3 x size x size in [-1, 1] (resized with a warning if needed)."""
    img = read_image(path)
    if img.size != (size, size):
        warnings.warn(f"{path}: background is {img.size[0]}x{img.size[1]}, resized to {size}x{size}")
        img = img.resize((size, size), Image.BICUBIC)
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0)
    return arr.permute(2, 0, 1).unsqueeze(0)


def list_backgrounds(path: Path) -> list[Path]:
    """One image, or every image in a folder."""
    if path.is_file():
        return [path]
    if path.is_dir():
        return list(list_by_stem(path, IMAGE_EXTS, "image", strict=True, flag="--background / --init_image").values())
    raise UserError(f"background {path} not found; pass an image or a folder of images")


def dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Binary dilation of B x 1 x H x W masks by a square of radius ``pixels``."""
    if pixels <= 0:
        return mask.float()
    return F.max_pool2d(mask.float(), 2 * pixels + 1, stride=1, padding=pixels)


def latent_mask(mask: torch.Tensor, latent_size: int) -> torch.Tensor:
    """1 where any pixel of the latent cell is inside the (dilated) mask."""
    return F.adaptive_max_pool2d(mask.float(), latent_size)


def blend_hook(z_background: torch.Tensor, keep_generated: torch.Tensor, diffusion, noise: torch.Tensor):
    """Sampler hook: outside ``keep_generated`` the latent follows the noised background."""
    def hook(i: int, x: torch.Tensor, t: int) -> torch.Tensor:
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        known = diffusion.q_sample(z_background, tt, noise)
        return keep_generated * x + (1 - keep_generated) * known
    return hook


def composite(generated: torch.Tensor, background01: torch.Tensor, region: torch.Tensor,
              feather: int = 2) -> torch.Tensor:
    """Generated inside ``region`` (B x 1 x H x W, dilated mask), background outside; soft edge
    of ``feather`` pixels grown inward-out only, so outside the region it is exactly the background."""
    soft = region.float()
    if feather > 0:
        soft = F.avg_pool2d(dilate(soft, 0), 2 * feather + 1, stride=1, padding=feather,
                            count_include_pad=False) * region.float()
    return soft * generated + (1 - soft) * background01
