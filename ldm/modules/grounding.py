"""Mask conditioning: the mask encoder (GLIGEN-sem ``PositionNet``) and the mask downsampler."""
from __future__ import annotations

import re

import timm
import torch
import torch.nn.functional as F
from torch import nn

from runtime.errors import UserError

# Original (facebookresearch ConvNeXt) parameter names  <->  timm names, relative to the backbone.
_TO_TIMM = [
    (re.compile(r"^downsample_layers\.0\.(\d)\."), r"stem.\1."),
    (re.compile(r"^downsample_layers\.(\d+)\.(\d)\."), r"stages.\1.downsample.\2."),
    (re.compile(r"^stages\.(\d+)\.(\d+)\.dwconv\."), r"stages.\1.blocks.\2.conv_dw."),
    (re.compile(r"^stages\.(\d+)\.(\d+)\.pwconv1\."), r"stages.\1.blocks.\2.mlp.fc1."),
    (re.compile(r"^stages\.(\d+)\.(\d+)\.pwconv2\."), r"stages.\1.blocks.\2.mlp.fc2."),
    (re.compile(r"^stages\.(\d+)\.(\d+)\.(norm\.|gamma$)"), r"stages.\1.blocks.\2.\3"),
]
_TO_ORIGINAL = [
    (re.compile(r"^stem\.(\d)\."), r"downsample_layers.0.\1."),
    (re.compile(r"^stages\.(\d+)\.downsample\.(\d)\."), r"downsample_layers.\1.\2."),
    (re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.conv_dw\."), r"stages.\1.\2.dwconv."),
    (re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\."), r"stages.\1.\2.pwconv1."),
    (re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\."), r"stages.\1.\2.pwconv2."),
    (re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.(norm\.|gamma$)"), r"stages.\1.\2.\3"),
]


def _rename(key: str, rules) -> str:
    for pattern, repl in rules:
        new, n = pattern.subn(repl, key)
        if n:
            return new
    return key


class ConvNeXtBackbone(nn.Module):
    """A timm ConvNeXt without its classifier head, returning the last-stage feature map.

    Its state dict uses the original ConvNeXt names (``downsample_layers``, ``stages.i.j.dwconv`` …)
    that GLIGEN/DefFiller checkpoints store, so those load strictly and our exports load back there.
    """

    def __init__(self, name: str = "convnext_tiny"):
        super().__init__()
        if not str(name).startswith("convnext") or not timm.is_model(name):
            raise UserError(f"model.params.grounding_tokenizer.params.backbone {name!r} is not a timm ConvNeXt; "
                            "use one such as convnext_tiny (the paper's) or convnext_atto")
        model = timm.create_model(name, pretrained=False)
        model.head = nn.Identity()
        self.stem, self.stages = model.stem, model.stages
        self.num_features = model.num_features
        self._register_state_dict_hook(self._to_original_names)
        self._register_load_state_dict_pre_hook(self._to_timm_names)

    @staticmethod
    def _to_original_names(module, state_dict, prefix, local_metadata):
        for key in [k for k in state_dict if k.startswith(prefix)]:
            state_dict[prefix + _rename(key[len(prefix):], _TO_ORIGINAL)] = state_dict.pop(key)
        return state_dict

    @staticmethod
    def _to_timm_names(state_dict, prefix, *args):
        for key in [k for k in state_dict if k.startswith(prefix)]:
            state_dict[prefix + _rename(key[len(prefix):], _TO_TIMM)] = state_dict.pop(key)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class PositionNet(nn.Module):
    """Mask encoder: one-hot semantic map -> grounding tokens.

    3x3 conv to 3 channels, ConvNeXt backbone (stride 32), ``(resize_input/32)^2`` tokens, learned
    position embedding, 3-layer SiLU MLP to ``out_dim``. Where the per-sample grounding mask is 0 the
    learned null feature replaces the image tokens (classifier-free guidance and training dropout).
    """

    down_factor = 32

    def __init__(self, resize_input: int = 448, in_dim: int = 152, out_dim: int = 768,
                 backbone: str = "convnext_tiny") -> None:
        super().__init__()
        if resize_input % self.down_factor:
            raise ValueError(f"resize_input must be a multiple of {self.down_factor}, got {resize_input}")
        self.resize_input, self.in_dim, self.out_dim = resize_input, in_dim, out_dim
        self.num_tokens = (resize_input // self.down_factor) ** 2
        self.in_conv = nn.Conv2d(in_dim, 3, 3, 1, 1)
        self.convnext_tiny_backbone = ConvNeXtBackbone(backbone)
        dim = self.convnext_tiny_backbone.num_features
        self.pos_embedding = nn.Parameter(torch.empty(1, self.num_tokens, dim).normal_(std=0.02))
        self.linears = nn.Sequential(nn.Linear(dim, 512), nn.SiLU(), nn.Linear(512, 512), nn.SiLU(),
                                     nn.Linear(512, out_dim))
        self.null_feature = nn.Parameter(torch.zeros(dim))

    def forward(self, sem: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b = sem.shape[0]
        sem = F.interpolate(sem, size=(self.resize_input, self.resize_input), mode="nearest")
        feats = self.convnext_tiny_backbone(self.in_conv(sem))
        objs = feats.reshape(b, -1, self.num_tokens).permute(0, 2, 1)
        mask = mask.reshape(-1, 1, 1).to(objs.dtype)
        objs = objs * mask + self.null_feature.view(1, 1, -1) * (1 - mask)
        return self.linears(objs + self.pos_embedding)

    def null_tokens(self, batch: int, device=None, dtype=None) -> torch.Tensor:
        """Tokens for grounding mask 0, without running the backbone."""
        tokens = self.linears(self.null_feature.view(1, 1, -1) + self.pos_embedding)
        tokens = tokens.expand(batch, -1, -1)
        return tokens.to(device=device or tokens.device, dtype=dtype or tokens.dtype)


class GroundingDownsampler(nn.Module):
    """Nearest-resize the one-hot map, then conv 4x4/2 -> SiLU -> conv 4x4/2 to ``out_dim`` channels."""

    def __init__(self, resize_input: int = 256, in_dim: int = 152, out_dim: int = 8) -> None:
        super().__init__()
        self.resize_input, self.out_dim = resize_input, out_dim
        self.layers = nn.Sequential(nn.Conv2d(in_dim, 16, 4, 2, 1), nn.SiLU(), nn.Conv2d(16, out_dim, 4, 2, 1))

    def forward(self, sem: torch.Tensor) -> torch.Tensor:
        sem = F.interpolate(sem, size=(self.resize_input, self.resize_input), mode="nearest")
        return self.layers(sem)
