"""A lightweight from-scratch saliency network in the style of MINet (a real-time strip-steel SOD network).

Encoder: a strided 3x3 stem, then four stages, each a strided depthwise-separable convolution followed by
``depths[i]`` multi-scale interaction blocks. A block splits its channels into one group per dilation; each
group runs a dilated depthwise 3x3 on its own channels plus the previous group's output (so the small-field
groups feed the large-field ones), and a pointwise convolution mixes the groups back, with a residual.

Decoder: top-down, one level per encoder stage; each level adds the (projected, upsampled) deeper decoder
output to its encoder feature and refines it with a dilated and a plain depthwise-separable convolution.
Every level has a 1x1 side head; the shallowest one (stride 2) is the prediction, the others are there for
deep supervision during training (:meth:`MSINet.forward_all`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from runtime.errors import UserError


def _bn_relu(c: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]


class DSConv(nn.Sequential):
    """Depthwise 3x3 (stride, dilation) -> BN-ReLU -> pointwise 1x1 -> BN-ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1):
        super().__init__(nn.Conv2d(cin, cin, 3, stride, padding=dilation, dilation=dilation, groups=cin,
                                   bias=False), *_bn_relu(cin),
                         nn.Conv2d(cin, cout, 1, bias=False), *_bn_relu(cout))


class MSIBlock(nn.Module):
    """Multi-scale interaction block: cascaded dilated depthwise groups, pointwise fusion, residual."""

    def __init__(self, channels: int, dilations: Sequence[int] = (1, 2, 4, 8)):
        super().__init__()
        n = len(dilations)
        if channels % n:
            raise UserError(f"model.widths: {channels} channels do not split into {n} dilation groups; "
                            "use widths divisible by the number of model.dilations")
        g = channels // n
        self.group = g
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(g, g, 3, padding=d, dilation=d, groups=g, bias=False), *_bn_relu(g))
            for d in dilations)
        self.fuse = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs: list[torch.Tensor] = []
        for part, branch in zip(torch.split(x, self.group, dim=1), self.branches):
            outs.append(branch(part if not outs else part + outs[-1]))
        return self.act(x + self.fuse(torch.cat(outs, dim=1)))


class MSINet(nn.Module):
    """Encoder of MSI blocks + top-down decoder with side heads -> one-channel saliency logits."""

    def __init__(self, in_chans: int = 3, widths: Sequence[int] = (16, 32, 64, 96, 128),
                 depths: Sequence[int] = (0, 3, 4, 6, 3), dilations: Sequence[int] = (1, 2, 4, 8)):
        super().__init__()
        widths, depths, dilations = [int(w) for w in widths], [int(d) for d in depths], [int(d) for d in dilations]
        if len(widths) < 2 or len(widths) != len(depths):
            raise UserError(f"model.widths and model.depths need the same length (at least 2), got {len(widths)} "
                            f"and {len(depths)}")
        if min(widths) < 1 or min(depths) < 0 or not dilations or min(dilations) < 1:
            raise UserError("model.widths and model.dilations must be positive and model.depths not negative")
        stages: list[nn.Module] = [nn.Sequential(
            nn.Conv2d(in_chans, widths[0], 3, 2, 1, bias=False), *_bn_relu(widths[0]),
            *(MSIBlock(widths[0], dilations) for _ in range(depths[0])))]
        for cin, cout, depth in zip(widths[:-1], widths[1:], depths[1:]):
            stages.append(nn.Sequential(DSConv(cin, cout, stride=2),
                                        *(MSIBlock(cout, dilations) for _ in range(depth))))
        self.stages = nn.ModuleList(stages)
        # decoder level i refines widths[i]; the deeper level's output is projected to widths[i] first
        self.decoders = nn.ModuleList(nn.Sequential(DSConv(w, w, dilation=2), DSConv(w, w)) for w in widths)
        self.projections = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cdeep, c, 1, bias=False), nn.BatchNorm2d(c))
            for c, cdeep in zip(widths[:-1], widths[1:]))
        self.heads = nn.ModuleList(nn.Conv2d(w, 1, 1) for w in widths)

    def _decode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Decoder features of every level, the shallowest (stride 2) first."""
        feats = []
        y = x
        for stage in self.stages:
            y = stage(y)
            feats.append(y)
        dec = self.decoders[-1](feats[-1])
        decoded = [dec]
        for i in range(len(feats) - 2, -1, -1):
            up = F.interpolate(self.projections[i](dec), size=feats[i].shape[-2:], mode="bilinear",
                               align_corners=False)
            dec = self.decoders[i](feats[i] + up)
            decoded.insert(0, dec)
        return decoded

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every side head at input size, the prediction (shallowest head) first."""
        return [F.interpolate(head(d), size=x.shape[-2:], mode="bilinear", align_corners=False)
                for head, d in zip(self.heads, self._decode(x))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.heads[0](self._decode(x)[0])
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
