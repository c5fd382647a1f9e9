"""The SD-1.x UNet with GLIGEN grounding (gated self-attention + mask downsampler).

State-dict names match the original ``openaimodel.UNetModel`` so official checkpoints load as they are.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import GatedSelfAttention, SpatialTransformer


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype (stable under fp16/bf16 autocast)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def normalization(channels: int) -> nn.Module:
    return GroupNorm32(32, channels)


GLIGEN_LAYERS = ("position_net", "downsample_net", "fuser")  # the modules GLIGEN adds to SD's UNet


def is_gligen_layer(name: str) -> bool:
    """Whether a UNet parameter, module or checkpoint key belongs to a layer GLIGEN adds to SD
    (the mask encoder ``position_net``, the ``downsample_net`` and the gated self-attention ``fuser``s)."""
    return any(part in GLIGEN_LAYERS for part in name.split("."))


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding, ``[cos, sin]`` order as in the original."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32,
                                                           device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock(nn.Module):
    def __init__(self, channels: int, emb_channels: int, out_channels: Optional[int] = None,
                 dropout: float = 0.0, use_checkpoint: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(normalization(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(normalization(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        nn.init.zeros_(self.out_layers[-1].weight)
        nn.init.zeros_(self.out_layers[-1].bias)
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))
        self.use_checkpoint = use_checkpoint

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and torch.is_grad_enabled() and x.requires_grad:
            return checkpoint(self._forward, x, emb, use_reentrant=False)
        return self._forward(x, emb)

    def _forward(self, x, emb):
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TimestepEmbedSequential(nn.Sequential):
    """Passes the time embedding to res-blocks and text/grounding tokens to transformers."""

    def forward(self, x, emb, context, objs):  # type: ignore[override]
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context, objs)
            else:
                x = layer(x)
        return x


class UNetModel(nn.Module):
    """GLIGEN-sem UNet: ``forward(x, t, context, grounding_tokens, extra)``.

    ``position_net`` (the mask encoder) and ``downsample_net`` are built from their sub-configs; callers
    compute grounding tokens and downsampler features once per batch (:meth:`encode_grounding`,
    :meth:`null_grounding`, :meth:`downsample_grounding`) and reuse them at every sampler step.
    """

    def __init__(self, image_size: int, in_channels: int, model_channels: int, out_channels: int,
                 num_res_blocks: int, attention_resolutions: Sequence[int], dropout: float = 0.0,
                 channel_mult: Sequence[int] = (1, 2, 4, 8), num_heads: int = 8, transformer_depth: int = 1,
                 context_dim: int = 768, fuser_type: str = "gatedSA", use_checkpoint: bool = False,
                 grounding_tokenizer: Optional[nn.Module] = None,
                 grounding_downsampler: Optional[nn.Module] = None, inpaint_mode: bool = False) -> None:
        super().__init__()
        if fuser_type != "gatedSA":
            raise ValueError(f"fuser_type {fuser_type!r} is not supported; DefFiller uses 'gatedSA'")
        if inpaint_mode:
            raise ValueError("inpaint_mode checkpoints are not supported (DefFiller does not use them)")
        if grounding_tokenizer is None:
            raise ValueError("the UNet needs a grounding_tokenizer (mask encoder) sub-config")
        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.context_dim = context_dim
        emb_dim = model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(),
                                        nn.Linear(emb_dim, emb_dim))
        self.downsample_net = grounding_downsampler
        extra = grounding_downsampler.out_dim if grounding_downsampler is not None else 0
        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(nn.Conv2d(in_channels + extra, model_channels, 3, padding=1))])

        def transformer(ch: int) -> SpatialTransformer:
            return SpatialTransformer(ch, context_dim, num_heads, ch // num_heads, transformer_depth,
                                      use_checkpoint)

        skip_chans = [model_channels]
        ch, ds = model_channels, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, mult * model_channels, dropout, use_checkpoint)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers.append(transformer(ch))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, emb_dim, dropout=dropout, use_checkpoint=use_checkpoint), transformer(ch),
            ResBlock(ch, emb_dim, dropout=dropout, use_checkpoint=use_checkpoint))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skip_chans.pop(), emb_dim, model_channels * mult, dropout, use_checkpoint)]
                ch = model_channels * mult
                if ds in attention_resolutions:
                    layers.append(transformer(ch))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(normalization(ch), nn.SiLU(), nn.Conv2d(model_channels, out_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        self.position_net = grounding_tokenizer

    # -- conditioning, computed once per batch -------------------------------------------------
    def encode_grounding(self, sem: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mask-encoder tokens (B x N x context_dim); ``mask`` 0 selects the learned null feature."""
        return self.position_net(sem, mask)

    def null_grounding(self, batch: int, device=None, dtype=None) -> torch.Tensor:
        """Tokens of the null grounding input (used by the unconditional guidance branch)."""
        return self.position_net.null_tokens(batch, device=device, dtype=dtype)

    def downsample_grounding(self, sem: torch.Tensor) -> Optional[torch.Tensor]:
        """Downsampler features concatenated to the latent (None when the model has no downsampler)."""
        return None if self.downsample_net is None else self.downsample_net(sem)

    def set_gate_scale(self, scale: float) -> None:
        """Scale every ``tanh(alpha)`` gate (GLIGEN's scheduled sampling; 0 disables grounding tokens)."""
        for m in self.modules():
            if isinstance(m, GatedSelfAttention):
                m.scale = float(scale)

    # -- forward --------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                grounding_tokens: torch.Tensor, extra: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.downsample_net is not None:
            if extra is None:
                raise ValueError("this UNet has a grounding downsampler: pass its features as `extra`")
            x = torch.cat([x, extra.to(x.dtype)], dim=1)
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(x.dtype))
        h, hs = x, []
        for block in self.input_blocks:
            h = block(h, emb, context, grounding_tokens)
            hs.append(h)
        h = self.middle_block(h, emb, context, grounding_tokens)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb, context, grounding_tokens)
        return self.out(h)
