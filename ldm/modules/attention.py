"""Transformer pieces of the GLIGEN UNet, with attention through ``scaled_dot_product_attention``.

Parameter names follow the original (``to_q``/``to_k``/``to_v``/``to_out.0``, ``ff.net.0.proj``, ``fuser``)
so checkpoints load without renaming.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class Attention(nn.Module):
    """Multi-head attention; self-attention when ``context`` is None."""

    def __init__(self, query_dim: int, context_dim: Optional[int] = None, heads: int = 8, dim_head: int = 64):
        super().__init__()
        inner = heads * dim_head
        context_dim = context_dim or query_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        context = x if context is None else context
        b, n, _ = x.shape
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        q, k, v = (t.view(b, -1, self.heads, t.shape[-1] // self.heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward with 4x inner width (SD's ``glu=True`` variant)."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class GatedSelfAttention(nn.Module):
    """GLIGEN's gated self-attention fuser (``fuser_type: gatedSA``).

    Visual tokens are concatenated with the projected grounding (mask) tokens, attended jointly, and
    only the visual part is kept. ``tanh(alpha)`` gates start at zero, so a fresh layer is the identity.
    ``scale`` lets samplers schedule the gate strength (GLIGEN's ``alpha_type``).
    """

    def __init__(self, query_dim: int, context_dim: int, heads: int, dim_head: int):
        super().__init__()
        self.linear = nn.Linear(context_dim, query_dim)
        self.attn = Attention(query_dim, heads=heads, dim_head=dim_head)
        self.ff = FeedForward(query_dim)
        self.norm1 = nn.LayerNorm(query_dim)
        self.norm2 = nn.LayerNorm(query_dim)
        self.alpha_attn = nn.Parameter(torch.tensor(0.0))
        self.alpha_dense = nn.Parameter(torch.tensor(0.0))
        self.scale = 1.0

    def forward(self, x: torch.Tensor, objs: torch.Tensor) -> torch.Tensor:
        n_visual = x.shape[1]
        objs = self.linear(objs)
        h = self.attn(self.norm1(torch.cat([x, objs], dim=1)))[:, :n_visual]
        x = x + self.scale * torch.tanh(self.alpha_attn) * h
        return x + self.scale * torch.tanh(self.alpha_dense) * self.ff(self.norm2(x))


class BasicTransformerBlock(nn.Module):
    """Self-attention, gated grounding fuser, text cross-attention, feed-forward."""

    def __init__(self, dim: int, context_dim: int, heads: int, dim_head: int, use_checkpoint: bool = False):
        super().__init__()
        self.attn1 = Attention(dim, heads=heads, dim_head=dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = Attention(dim, context_dim, heads=heads, dim_head=dim_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.fuser = GatedSelfAttention(dim, context_dim, heads, dim_head)
        self.use_checkpoint = use_checkpoint

    def forward(self, x: torch.Tensor, context: torch.Tensor, objs: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and torch.is_grad_enabled() and x.requires_grad:
            return checkpoint(self._forward, x, context, objs, use_reentrant=False)
        return self._forward(x, context, objs)

    def _forward(self, x, context, objs):
        x = x + self.attn1(self.norm1(x))
        x = self.fuser(x, objs)
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """GroupNorm, 1x1 projection in, transformer blocks over the h*w tokens, 1x1 projection out, residual."""

    def __init__(self, channels: int, context_dim: int, heads: int, dim_head: int, depth: int = 1,
                 use_checkpoint: bool = False):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, context_dim, heads, dim_head, use_checkpoint) for _ in range(depth)])
        self.proj_out = nn.Conv2d(inner, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor, objs: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.proj_in(self.norm(x))
        y = y.flatten(2).transpose(1, 2)
        for block in self.transformer_blocks:
            y = block(y, context, objs)
        y = y.transpose(1, 2).reshape(b, -1, h, w)
        return x + self.proj_out(y)
