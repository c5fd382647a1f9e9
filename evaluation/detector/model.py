"""The detector's networks: a U-Net on any timm ``features_only`` encoder (``model.arch: unet``) and the
from-scratch MSINet (``model.arch: msinet``, :mod:`.msinet`); :func:`build_model` picks one from the config.

U-Net: the encoder yields feature maps at strides 2..32 (or a subset); the decoder walks back up, each
step upsampling to the next skip's size, concatenating it and applying two 3x3 conv-BN-ReLU
layers. A 1x1 head gives one logit per pixel at the input resolution.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from runtime.errors import UserError

from .checks import ARCHS
from .msinet import MSINet


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _UpBlock(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn_relu(cin + cskip, cout), _conv_bn_relu(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.body(x)


def build_encoder(name: str, pretrained: bool | str = False, in_chans: int = 3) -> nn.Module:
    """A timm encoder returning multi-scale features.

    ``pretrained`` may be ``False`` (random init), ``True`` (timm's own download; needs network)
    or a path to a local timm/torchvision state-dict file for the same architecture.
    """
    import timm

    kwargs: dict = dict(features_only=True, in_chans=in_chans)
    if isinstance(pretrained, (str, Path)) and str(pretrained):
        path = Path(pretrained)
        if not path.is_file():
            raise UserError(f"{path}: encoder weights file not found; set model.pretrained to false "
                            "or to an existing local timm state-dict for this encoder")
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    elif pretrained is True:
        kwargs.update(pretrained=True)
    try:
        return timm.create_model(name, **kwargs)
    except RuntimeError as exc:  # unknown model or feature extraction unsupported
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"timm encoder {name!r}: {msg}; pick another model.encoder") from None
    except (OSError, ValueError) as exc:
        if pretrained:
            raise UserError(f"timm encoder {name!r}: pretrained weights unavailable ({type(exc).__name__}); "
                            "set model.pretrained to false or to a local weights file") from None
        raise


class SaliencyUNet(nn.Module):
    """Encoder (timm) + U-Net decoder -> one-channel saliency logits at input size."""

    def __init__(self, encoder: str = "mobilenetv3_small_100", pretrained: bool | str = False, in_chans: int = 3,
                 decoder_channels: Sequence[int] = (128, 64, 48, 32), full_res_block: bool = False):
        super().__init__()
        self.encoder = build_encoder(encoder, pretrained, in_chans)
        chans = list(self.encoder.feature_info.channels())
        if len(decoder_channels) < len(chans) - 1:
            raise UserError(f"model.decoder_channels needs at least {len(chans) - 1} entries for "
                            f"encoder {encoder!r} ({len(chans)} feature levels)")
        blocks = []
        cin = chans[-1]
        for skip_c, cout in zip(reversed(chans[:-1]), decoder_channels):
            blocks.append(_UpBlock(cin, skip_c, cout))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        # Optional conv block at input resolution; without it the head runs at the shallowest
        # feature stride and its logits are upsampled bilinearly (much cheaper on CPU).
        self.final = _UpBlock(cin, 0, max(8, cin // 2)) if full_res_block else None
        self.head = nn.Conv2d(max(8, cin // 2) if full_res_block else cin, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        y = feats[-1]
        for block, skip in zip(self.blocks, reversed(feats[:-1])):
            y = block(y, skip, skip.shape[-2:])
        if self.final is not None:
            return self.head(self.final(y, None, x.shape[-2:]))
        y = self.head(y)
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The prediction alone (no side outputs), as a list like :meth:`MSINet.forward_all`."""
        return [self(x)]


def build_model(cfg) -> nn.Module:
    """Model from the ``model:`` section of a detector config (mapping or OmegaConf)."""
    get = cfg.get if hasattr(cfg, "get") else (lambda k, d=None: getattr(cfg, k, d))
    arch = get("arch", "unet")
    if arch not in ARCHS:
        raise UserError(f"model.arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    if arch == "msinet":
        return MSINet(in_chans=int(get("in_chans", 3)), widths=tuple(get("widths", (16, 32, 64, 96, 128))),
                      depths=tuple(get("depths", (0, 3, 4, 6, 3))), dilations=tuple(get("dilations", (1, 2, 4, 8))))
    return SaliencyUNet(encoder=str(get("encoder", "mobilenetv3_small_100")),
                        pretrained=get("pretrained", False) or False,
                        in_chans=int(get("in_chans", 3)),
                        decoder_channels=tuple(get("decoder_channels", (128, 64, 48, 32))),
                        full_res_block=bool(get("full_res_block", False)))
