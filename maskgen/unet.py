"""A small class-conditional UNet for single-channel defect masks.

The class embedding is added to the timestep embedding. One extra class id (``num_classes``) is the
learned "null" class used for classifier-free guidance: training replaces the label by it with a
small probability, sampling mixes the conditional and null predictions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ldm.modules.unet import timestep_embedding


@dataclass
class UNetConfig:
    """Architecture hyper-parameters (stored in every checkpoint)."""

    in_channels: int = 1
    patch_size: int = 1
    base_channels: int = 32
    channel_mult: Sequence[int] = field(default_factory=lambda: (1, 2, 3, 4))
    num_res_blocks: int = 2
    attention_levels: Sequence[int] = field(default_factory=lambda: (3,))
    num_heads: int = 4
    dropout: float = 0.0
    num_classes: int = 3
    groups: int = 8

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any], num_classes: int) -> "UNetConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(cfg) - known - {"num_classes"})
        if unknown:
            raise ValueError(f"unknown model option(s) {', '.join(unknown)}; allowed: "
                             f"{', '.join(sorted(known - {'num_classes'}))}")
        values = {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in cfg.items()
                  if k != "num_classes"}
        return cls(num_classes=num_classes, **values)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    def __init__(self, channels: int, heads: int, groups: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention channels {channels} not divisible by num_heads {heads}")
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class MaskUNet(nn.Module):
    """``forward(x, t, y)``: ``x`` B×1×H×W in [-1, 1], ``t`` B integer steps, ``y`` B class ids
    (``num_classes`` = null class). Returns the predicted noise. H and W must be divisible by
    ``patch_size * 2 ** (len(channel_mult) - 1)``. With ``patch_size`` p > 1 the mask is folded
    into p×p pixel patches (pixel-unshuffle) before the first convolution and unfolded after the
    last, which divides the cost of the full-resolution level by about p² (a CPU-friendly choice)."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.base_channels
        emb_dim = 4 * ch
        self.null_class = cfg.num_classes
        self.time_dim = max(ch, 64)  # sinusoidal features: enough frequencies even for tiny widths
        self.time_mlp = nn.Sequential(nn.Linear(self.time_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(cfg.num_classes + 1, emb_dim)
        self.patch = int(cfg.patch_size)
        if self.patch < 1:
            raise ValueError(f"patch_size must be >= 1, got {cfg.patch_size}")
        pixels = cfg.in_channels * self.patch ** 2
        self.conv_in = nn.Conv2d(pixels, ch, 3, padding=1)

        levels = len(cfg.channel_mult)
        attn = set(int(a) for a in cfg.attention_levels)
        self.down = nn.ModuleList()
        skips = [ch]
        cur = ch
        for lvl, mult in enumerate(cfg.channel_mult):
            out = ch * mult
            for _ in range(cfg.num_res_blocks):
                blocks = nn.ModuleList([ResBlock(cur, out, emb_dim, cfg.groups, cfg.dropout)])
                if lvl in attn:
                    blocks.append(SelfAttention(out, cfg.num_heads, cfg.groups))
                self.down.append(blocks)
                cur = out
                skips.append(cur)
            if lvl < levels - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(cur, cur, 3, stride=2, padding=1)]))
                skips.append(cur)

        self.mid = nn.ModuleList([ResBlock(cur, cur, emb_dim, cfg.groups, cfg.dropout),
                                  SelfAttention(cur, cfg.num_heads, cfg.groups),
                                  ResBlock(cur, cur, emb_dim, cfg.groups, cfg.dropout)])

        self.up = nn.ModuleList()
        for lvl in reversed(range(levels)):
            out = ch * cfg.channel_mult[lvl]
            for i in range(cfg.num_res_blocks + 1):
                blocks = nn.ModuleList([ResBlock(cur + skips.pop(), out, emb_dim, cfg.groups, cfg.dropout)])
                if lvl in attn:
                    blocks.append(SelfAttention(out, cfg.num_heads, cfg.groups))
                if lvl > 0 and i == cfg.num_res_blocks:
                    blocks.append(_Upsample(out))
                self.up.append(blocks)
                cur = out
        self.norm_out = nn.GroupNorm(cfg.groups, cur)
        self.conv_out = nn.Conv2d(cur, pixels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.time_dim)) + self.class_emb(y)
        h = self.conv_in(F.pixel_unshuffle(x, self.patch) if self.patch > 1 else x)
        hs = [h]
        for blocks in self.down:
            for layer in blocks:
                h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        for blocks in self.up:
            h = torch.cat([h, hs.pop()], dim=1)
            for layer in blocks:
                h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return F.pixel_shuffle(out, self.patch) if self.patch > 1 else out


class _Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def build_unet(model_cfg: Mapping[str, Any], num_classes: int) -> MaskUNet:
    return MaskUNet(UNetConfig.from_mapping(model_cfg, num_classes))
