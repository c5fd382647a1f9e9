"""Mask + prompt -> image: the generation path shared by ``infer.py`` and the trainer's sample grids.

conditioning (text context, grounding tokens, downsampler features: once per batch)
  -> sampler (PLMS / DDIM / DPM-Solver++ / UniPC over a guided eps- or v-model) -> autoencoder decode.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from ldm.build import DefFillerModels
from ldm.diffusion.guidance import DEFAULT_GUIDANCE_SCALE, Conditioning, guided_eps_fn
from ldm.diffusion.samplers import SAMPLERS, Hook
from runtime.errors import UserError


def gate_schedule(steps: int, alpha_type: Sequence[float]) -> list[float]:
    """GLIGEN's scheduled sampling: fractions of steps with gate scale 1, linear decay, then 0."""
    if len(alpha_type) != 3 or abs(sum(alpha_type) - 1) > 1e-6 or min(alpha_type) < 0:
        raise UserError(f"alpha_type must be three non-negative fractions summing to 1, got {list(alpha_type)}")
    full, decay = int(alpha_type[0] * steps), int(alpha_type[1] * steps)
    ramp = [1 - (i + 1) / (decay + 1) for i in range(decay)]
    return [1.0] * full + ramp + [0.0] * (steps - full - decay)


def grounding_inputs(unet: torch.nn.Module, sem: torch.Tensor,
                     grounding_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's grounding tokens (mask encoder; the null tokens where ``grounding_mask`` is 0) and its
    downsampler features: the conditioning shared by generation and training."""
    return unet.encode_grounding(sem, grounding_mask), unet.downsample_grounding(sem)


class DefFillerPipeline:
    """Holds loaded models on one device; every method works on a whole batch."""

    def __init__(self, models: DefFillerModels, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, channels_last: bool = True) -> None:
        if models.text_encoder is None or models.autoencoder is None:
            raise UserError("generation needs a text encoder and an autoencoder in the config/checkpoint")
        self.models = models.to(device).eval()
        self.unet = models.model
        if channels_last:  # NHWC weights: faster oneDNN / cuDNN convolutions, same numbers up to rounding
            self.unet.to(memory_format=torch.channels_last)
        self.device, self.dtype = torch.device(device), dtype
        self._text_cache: dict[str, torch.Tensor] = {}

    @property
    def in_dim(self) -> int:
        return self.unet.position_net.in_dim

    def latent_shape(self, batch: int) -> tuple[int, int, int, int]:
        s = self.unet.image_size
        return batch, self.unet.in_channels, s, s

    @property
    def image_channels(self) -> int:
        """Channels of decoded images (3 for SD's autoencoder, 1 for a grey pixel-space demo)."""
        return int(getattr(self.models.autoencoder, "channels", 3))

    @property
    def image_size(self) -> int:
        return self.models.image_size

    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """Text context, each distinct prompt encoded once per pipeline."""
        todo = sorted({p for p in prompts if p not in self._text_cache})
        if todo:
            for p, c in zip(todo, self.models.text_encoder.encode(todo)):
                self._text_cache[p] = c
        return torch.stack([self._text_cache[p] for p in prompts]).to(self.device)

    @torch.no_grad()
    def conditioning(self, sem: torch.Tensor, prompts: Sequence[str], negative_prompt: str = "",
                     grounding_mask: Optional[torch.Tensor] = None) -> tuple[Conditioning, Conditioning]:
        """Conditional and unconditional inputs for a batch of one-hot maps (B x in_dim x H x W).

        The unconditional branch replaces what ``diffusion.uncond_drop`` names: by default, as in the
        original, the prompt (by the negative/empty prompt) and the grounding tokens (by the null
        tokens) but not the downsampler features (zeros when ``downsampler`` is named).
        """
        b = sem.shape[0]
        sem = sem.to(self.device)
        gmask = torch.ones(b, device=self.device) if grounding_mask is None else grounding_mask.to(self.device)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            tokens, extra = grounding_inputs(self.unet, sem, gmask)
            null = self.unet.null_grounding(b, device=self.device)
        drop = self.models.diffusion.uncond_drop
        context = self.encode_text(list(prompts))
        uncond_ctx = self.encode_text([negative_prompt] * b) if "prompt" in drop else context
        uncond_tokens = null.to(tokens.dtype) if "tokens" in drop else tokens
        uncond_extra = torch.zeros_like(extra) if "downsampler" in drop and extra is not None else extra
        return Conditioning(context, tokens, extra), Conditioning(uncond_ctx, uncond_tokens, uncond_extra)

    @torch.no_grad()
    def sample(self, cond: Conditioning, uncond: Optional[Conditioning], noise: torch.Tensor, sampler: str = "plms",
               steps: int = 50, guidance_scale: float = DEFAULT_GUIDANCE_SCALE, hook: Optional[Hook] = None,
               alpha_type: Optional[Sequence[float]] = None, batched_cfg: bool = True,
               progress: bool = False, start_step: int = 0,
               guidance_interval: Optional[tuple[int, int]] = None,
               guidance_low: Optional[tuple[float, int]] = None) -> torch.Tensor:
        """Run a sampler from ``noise`` (latent shape); returns latents. The prediction type and the
        timestep spacing come from the model's diffusion settings; ``guidance_interval`` and
        ``guidance_low`` are :func:`ldm.diffusion.guidance.guided_eps_fn`'s ``interval`` and ``low``."""
        if sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {sampler!r}; choose from {sorted(SAMPLERS)}")
        eps_fn = guided_eps_fn(self.unet, cond, uncond, guidance_scale, batched=batched_cfg,
                               interval=guidance_interval, low=guidance_low)
        if self.dtype != torch.float32:
            inner = eps_fn

            def eps_fn(x, t):  # autocast the network, keep the solver in float32
                with torch.autocast(self.device.type, dtype=self.dtype):
                    return inner(x, t).float()
        hook = self._with_gate_schedule(hook, steps, alpha_type)
        ac = self.models.diffusion.alphas_cumprod.to(self.device)
        try:
            return SAMPLERS[sampler](eps_fn, noise.to(self.device, torch.float32), ac, steps, hook=hook,
                                     progress=progress, start_step=start_step,
                                     **self.models.diffusion.sampling_kwargs())
        finally:
            if alpha_type is not None:
                self.unet.set_gate_scale(1.0)

    def _with_gate_schedule(self, hook: Optional[Hook], steps: int,
                            alpha_type: Optional[Sequence[float]]) -> Optional[Hook]:
        if alpha_type is None:
            return hook
        scales = gate_schedule(steps, alpha_type)

        def scheduled(i: int, x: torch.Tensor, t: int) -> torch.Tensor:
            self.unet.set_gate_scale(scales[min(i, len(scales) - 1)])
            return x if hook is None else hook(i, x, t)
        return scheduled

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [0, 1] (B x 3 x H x W, float32)."""
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            images = self.models.autoencoder.decode(latents)
        return ((images.float().clamp(-1, 1) + 1) / 2)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Images in [-1, 1] -> latents (posterior mean: deterministic)."""
        return self.models.autoencoder.encode(images.to(self.device), generator=generator, sample=False)
