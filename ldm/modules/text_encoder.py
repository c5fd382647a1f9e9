"""Frozen CLIP text encoder (transformers ``CLIPTextModel``), as SD-1.x uses it.

State-dict names are those of the checkpoints (``transformer.text_model.*`` plus the legacy
``position_ids`` buffer) whatever transformers release is installed: loading accepts both the legacy
and the current names, saving writes the legacy ones.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from .tokenizer import tokenize

# The text tower of openai/clip-vit-large-patch14 (what SD-1.x and GLIGEN use).
CLIP_VIT_L14_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                         num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                         layer_norm_eps=1e-5, projection_dim=768)
LEGACY_PREFIX = "transformer.text_model."
POSITION_IDS = "embeddings.position_ids"


class FrozenCLIPEmbedder(nn.Module):
    """Prompts -> last hidden state (B x 77 x width). ``config`` overrides the text-tower shape
    (tiny demo models); the weights come from a checkpoint, never from a download."""

    def __init__(self, version: str = "openai/clip-vit-large-patch14", max_length: int = 77,
                 config: Optional[dict] = None, **_: object) -> None:
        super().__init__()
        self.version, self.max_length = version, max_length
        params = dict(CLIP_VIT_L14_TEXT)
        params.update(dict(config or {}))
        text_config = CLIPTextConfig(**params)
        text_config._attn_implementation = "sdpa"
        self.transformer = CLIPTextModel(text_config)
        self._inner = "text_model." if hasattr(self.transformer, "text_model") else ""
        self.requires_grad_(False)
        self._register_state_dict_hook(self._save_legacy_names)
        self._register_load_state_dict_pre_hook(self._load_any_names)

    @property
    def width(self) -> int:
        return self.transformer.config.hidden_size

    def _save_legacy_names(self, module, state_dict, prefix, local_metadata):
        ours = prefix + "transformer." + self._inner
        for key in [k for k in state_dict if k.startswith(ours)]:
            state_dict[prefix + LEGACY_PREFIX + key[len(ours):]] = state_dict.pop(key)
        positions = self.transformer.config.max_position_embeddings
        device = next(self.parameters()).device
        state_dict[prefix + LEGACY_PREFIX + POSITION_IDS] = torch.arange(positions, device=device)[None, :]
        return state_dict

    def _load_any_names(self, state_dict, prefix, *args):
        ours = prefix + "transformer." + self._inner
        for key in [k for k in state_dict if k.startswith(prefix + "transformer.")]:
            rest = key[len(prefix + "transformer."):]
            rest = rest[len("text_model."):] if rest.startswith("text_model.") else rest
            if rest == POSITION_IDS:  # a constant arange, not a parameter, in current transformers
                state_dict.pop(key)
                continue
            state_dict[ours + rest] = state_dict.pop(key)

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        return tokenize(list(prompts), self.version, self.max_length)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        device = next(self.parameters()).device
        ids = self.tokenize(prompts).to(device)
        return self.transformer(input_ids=ids).last_hidden_state

    def forward(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.encode(prompts)
