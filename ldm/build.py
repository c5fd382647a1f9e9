"""Build the DefFiller model parts from a config."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Union

import torch
from omegaconf import DictConfig
from torch import nn

from ldm.config import PARTS, instantiate
from ldm.diffusion.schedule import NoiseSchedule
from ldm.modules.unet import UNetModel


@dataclass
class DefFillerModels:
    """The parts of a GLIGEN-sem checkpoint (text encoder / autoencoder / mask upscaler may be absent)."""

    config: DictConfig
    model: UNetModel
    diffusion: NoiseSchedule
    autoencoder: Optional[nn.Module] = None
    text_encoder: Optional[nn.Module] = None
    upscaler: Optional[nn.Module] = None
    extra: dict = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        """Side of the images the model draws (the UNet's side times the autoencoder's downscale)."""
        return self.model.image_size * getattr(self.autoencoder, "downscale", 8)

    def parts(self) -> dict[str, nn.Module]:
        """Checkpoint section name -> module, for the parts that exist."""
        return {name: getattr(self, name) for name in PARTS if getattr(self, name) is not None}

    def to(self, device: Optional[Union[str, torch.device]] = None) -> "DefFillerModels":
        for module in self.parts().values():
            module.to(device=device)
        return self

    def eval(self) -> "DefFillerModels":
        for module in self.parts().values():
            module.eval()
        return self


def build_models(cfg: DictConfig, parts: Iterable[str] = PARTS, device: Optional[str] = None) -> DefFillerModels:
    """Instantiate the parts named in ``parts`` that ``cfg`` describes.

    ``device="meta"`` builds shapes only (no memory), e.g. to check a checkpoint's layout.
    """
    wanted = set(parts)
    ctx = torch.device(device) if device else torch.device("cpu")
    with ctx:
        model = instantiate(cfg.model)
        diffusion = instantiate(cfg.diffusion) if "diffusion" in cfg else NoiseSchedule()
        autoencoder = instantiate(cfg.autoencoder) if "autoencoder" in cfg and "autoencoder" in wanted else None
        text_encoder = (instantiate(cfg.text_encoder) if "text_encoder" in cfg and "text_encoder" in wanted
                        else None)
        upscaler = instantiate(cfg.upscaler) if "upscaler" in cfg and "upscaler" in wanted else None
    return DefFillerModels(cfg, model, diffusion, autoencoder, text_encoder, upscaler)
