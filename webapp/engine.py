"""The models behind the page, loaded once: the DefFiller pipeline and, optionally, the mask producer.

Generation goes through ``inference.generate`` (the library ``infer.py`` uses); this module only turns
the page's inputs into its arguments.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from dataset.categories import Category, categories_from_config
from inference.generate import (
    GenerationOptions,
    JobSpec,
    check_options,
    generate_batch,
    generate_dataset,
    load_pipeline,
    record_for,
    sampling_defaults,
    settings_for,
)
from inference.implant import load_background
from runtime.errors import UserError

# settings that the page lets change from one image to the next: they go into each image's record
PER_IMAGE = ("sampler", "steps", "guidance_scale", "guidance_interval", "negative_prompt", "alpha_type", "mode",
             "strength", "dilate", "background")


@dataclass
class MaskProducer:
    """A loaded maskgen checkpoint (``maskgen.sample``'s library)."""

    model: torch.nn.Module
    categories: list[Category]
    settings: dict
    image_size: int
    path: str


class Engine:
    """One pipeline on one device; the page's queue runs one request at a time on it."""

    def __init__(self, ckpt: str | Path, device: Optional[str] = None, precision: str = "fp32",
                 weights: str = "auto", maskgen_ckpt: Optional[str | Path] = None) -> None:
        self.ckpt = Path(ckpt)
        self.precision = precision
        self.pipe = load_pipeline(self.ckpt, device=device, precision=precision, weights=weights)
        self.categories: list[Category] = categories_from_config(
            self.pipe.models.config.get("data", {}).get("categories"))
        self.size: int = self.pipe.image_size
        # the checkpoint's recommended sampler, steps, guidance scale, interval and low-frequency guidance
        # (else the paper's)
        self.recommended: dict = sampling_defaults(self.pipe.models.config)
        self.maskgen = load_mask_producer(maskgen_ckpt) if maskgen_ckpt else None

    def category(self, name: str) -> Category:
        for cat in self.categories:
            if name in (cat.name, cat.prefix):
                return cat
        raise UserError(f"pick a category: one of {', '.join(c.name for c in self.categories)}")

    def options(self, sampler: str, steps: int, guidance_scale: float, mode: str = "generate",
                strength: float = 0.8, dilate: int = 4, negative_prompt: str = "",
                batch_size: int = 4) -> GenerationOptions:
        interval = self.recommended["guidance_interval"] if sampler == self.recommended["sampler"] else None
        opts = GenerationOptions(sampler=sampler, steps=int(steps), guidance_scale=float(guidance_scale), mode=mode,
                                 strength=float(strength), dilate=int(dilate), negative_prompt=negative_prompt,
                                 precision=self.precision, batch_size=batch_size, guidance_interval=interval,
                                 guidance_low=self.recommended["guidance_low"])
        check_options(self.pipe, opts)
        return opts

    def background(self, path: str | Path) -> tuple[torch.Tensor, Optional[str]]:
        """A background / start image as 1 x 3 x size x size in [0, 1], read as ``infer.py`` reads it.

        A non-square image is refused (stretching it would change the defect scale); a square one of
        another size is resized, and the second value says so.
        """
        from dataset.io import read_image

        w, h = read_image(path).size
        if w != h:
            raise UserError(f"the image is {w}x{h}: the model works on square {self.size}x{self.size} "
                            "images; crop it to a square first")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            image = (load_background(Path(path), self.size) + 1) / 2
        note = f"the image is {w}x{h}, resized to the model's {self.size}x{self.size}" if caught else None
        return image, note

    def generate(self, mask: np.ndarray, category: Category, seeds: Sequence[int], opts: GenerationOptions,
                 background01: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``len(seeds)`` variants for one mask (size x size bool): N x C x size x size in [0, 1]."""
        n = len(seeds)
        masks = torch.from_numpy(np.ascontiguousarray(mask)).float().unsqueeze(0).expand(n, -1, -1).contiguous()
        backgrounds = background01.expand(n, -1, -1, -1).contiguous() if background01 is not None else None
        return generate_batch(self.pipe, masks, [category.index] * n, [category.prompt] * n, list(seeds), opts,
                              backgrounds)

    def keep_settings(self) -> dict:
        """``settings`` of the kept-pairs folder: what is fixed for this checkpoint; the rest is per image."""
        settings = settings_for(self.pipe, GenerationOptions(precision=self.precision))
        for key in PER_IMAGE:
            settings[key] = "per image"
        return settings

    def record(self, mask_source: str, category: Category, seed: int, opts: GenerationOptions,
               source: Optional[str] = None) -> dict:
        """``infer.py``'s record for one image, plus the settings the page changes per image."""
        record = record_for(mask_source, category.name, category.prompt, seed, opts, source)
        record.update(mode=opts.mode, negative_prompt=opts.negative_prompt)
        if opts.mode == "sdedit":
            record["strength"] = opts.strength
        if opts.mode == "implant":
            record["dilate"] = opts.dilate
        return record

    def new_mask(self, category: Category, seed: int) -> np.ndarray:
        """One mask drawn by the mask producer for ``category`` at the model's resolution."""
        from maskgen.sample import sample_masks

        if self.maskgen is None:
            raise UserError("no mask producer loaded; start the app with --maskgen_ckpt PATH")
        mg = self.maskgen
        match = [c for c in mg.categories if c.name == category.name]
        if not match:
            raise UserError(f"the mask producer knows no {category.name!r} masks "
                            f"(it knows {', '.join(c.name for c in mg.categories)})")
        settings = _sample_settings(mg.settings, size=self.size, seed=seed, batch_size=1)
        result = sample_masks(mg.model, mg.categories, match, 1, settings, mg.image_size,
                              str(self.pipe.device), progress=False)
        return result[0].masks[0].astype(bool)

    def write_new_masks(self, out: Path, n_per_category: int, categories: Sequence[Category], seed: int) -> Path:
        """``n_per_category`` producer masks per category written as ``maskgen.sample`` writes them."""
        from maskgen.sample import sample_masks, write_masks

        if self.maskgen is None:
            raise UserError("no mask producer loaded; start the app with --maskgen_ckpt PATH")
        mg = self.maskgen
        selected = [c for c in mg.categories if c.name in {k.name for k in categories}]
        if not selected:
            raise UserError("the mask producer knows none of the chosen categories")
        settings = _sample_settings(mg.settings, size=self.size, seed=seed)
        results = sample_masks(mg.model, mg.categories, selected, n_per_category, settings, mg.image_size,
                               str(self.pipe.device), progress=False)
        write_masks(results, out)
        return out

    def dataset(self, mask_dir: Path, out_dir: Path, opts: GenerationOptions, num_per_mask: int, seed: int,
                background: Optional[Path], progress: Callable[[int, int], None]) -> Path:
        """A paired dataset from a folder of masks: ``infer.py``'s loop."""
        spec = JobSpec(Path(mask_dir), num_per_mask=num_per_mask, seed=seed)
        return generate_dataset(self.pipe, spec, out_dir, opts, background=background, progress=progress)


def _sample_settings(stored: dict, **override):
    from maskgen.sample import SampleSettings

    s = SampleSettings(**{k: v for k, v in stored.items() if k in SampleSettings.__dataclass_fields__})
    for key, value in override.items():
        setattr(s, key, value)
    s.check()
    return s


def load_mask_producer(path: str | Path) -> MaskProducer:
    """A maskgen checkpoint (file or run folder) with its EMA weights."""
    from maskgen.checkpoint import load_checkpoint
    from maskgen.model import model_from_checkpoint

    ckpt = load_checkpoint(path)
    model, cats = model_from_checkpoint(ckpt, "ema")
    return MaskProducer(model, cats, dict(ckpt["config"].get("sample", {})),
                        int(ckpt["config"]["data"]["image_size"]), ckpt["path"])
