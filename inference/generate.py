"""The generation library behind ``infer.py``: mask(s) in, image(s) or a paired dataset out.

API (everything raises :class:`runtime.errors.UserError`, one line naming the ``infer.py`` flag)::

    GenerationOptions(sampler="plms", steps=None, guidance_scale=3.0, negative_prompt="", alpha_type=None,
                      mode="generate", strength=0.8, dilate=4, precision="fp32", output_size=None,
                      grayscale=False, batch_size=4, guidance_interval=None, guidance_low=None)
        frozen, validated on construction (finite guidance, batch_size >= 1, output_size >= 1, ...);
        steps=None -> DEFAULT_STEPS[sampler]; mode: generate | implant | sdedit;
        guidance_interval (lo, hi): guidance only at timesteps lo <= t <= hi;
        guidance_low (scale, size): the guidance's low frequencies (box of size latent pixels, 0: the
        mean) get this scale (ldm.diffusion.guidance.combine)
    recommended_sampling(config) -> dict       the config's ``sampling:`` section, checked (may be empty)
    sampling_defaults(config, sampler=None, steps=None, guidance_scale=None, guidance_interval=None,
                      guidance_low=None) -> dict
        the given flags, else the checkpoint's recommendation, else plms 50 / guidance 3
    load_pipeline(ckpt, device=None, precision="fp32", weights="auto", config=None, local_rank=0)
        -> DefFillerPipeline   (device None/"auto": this rank's GPU, else CPU; loaded once, reuse it)
    check_options(pipe, opts) -> None          steps the checkpoint's schedule holds, matching precision
    generate_batch(pipe, masks, category_indices, prompts, seeds, opts, backgrounds=None) -> torch.Tensor
        masks: B x H x W in {0, 1} at pipe.image_size; seeds: one per image (noise = seed_noise(seed));
        backgrounds: B x 3 x H x W in [0, 1] at the model size (implant/sdedit);
        returns B x C x H x W in [0, 1] at the model size; no file I/O
    resize_images(images, size) -> torch.Tensor    to the output size (bicubic, antialiased)
    use_upscaler(pipe, choice) -> None
        "auto": the checkpoint's mask-guided upscaler if it has one; "none": plain bicubic; a file written by
        ``python -m training.upscaler``: that one (ldm.modules.mask_upscaler); used for output sizes above
        the model's
    generate_dataset(pipe, jobs, out_dir, opts, background=None, rank=0, world=1, progress=None,
                     preview=True) -> Path
        jobs: JobSpec(mask_dir, num_per_mask=1, seed=0, prompt=None, skip_empty=False);
        writes out_dir/{Source_Images,Ground_truth}/NAME.png, generation.json, preview.png and
        returns out_dir; locks out_dir (runtime.lock.FolderLock), resumes, refuses other settings;
        progress(done, total) after every batch of this rank
    settings_for(pipe, opts, spec=None, background=None) -> dict      generation.json "settings"
    record_for(mask, category, prompt, seed, opts, source=None) -> dict   one generation.json image entry

One pair by hand (a web page)::

    with FolderLock(root):
        writer = PairedWriter(root, settings_for(pipe, opts), rank=0)
        image = resize_images(generate_batch(pipe, mask[None], [cat], [prompt], [seed], opts), size)[0]
        writer.write(name, image, mask_at_size.bool(), record_for("drawn", cat_name, prompt, seed, opts),
                     opts.grayscale)
        writer.flush(); writer.merge()
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from dataset.categories import categories_from_config
from dataset.sem_dataset import one_hot_sem
from inference.implant import (
    blend_hook,
    composite,
    dilate,
    latent_mask,
    list_backgrounds,
    load_background,
)
from inference.jobs import Job, JobSpec, build_jobs, mask_tensor, seed_noise, shard
from inference.preview import write_preview
from inference.writer import INFER_FIX, PairedWriter, prepare_folder, prepare_root
from ldm.checkpoint import load_models, read_upscaler, upscaler_label
from ldm.diffusion.guidance import DEFAULT_GUIDANCE_SCALE, check_interval, check_low
from ldm.diffusion.samplers import SAMPLERS, start_timestep
from ldm.modules.mask_upscaler import resize_images, upscale_images
from ldm.pipeline import DefFillerPipeline, gate_schedule
from runtime.device import cpu_has_bf16, pick_device
from runtime.digest import file_sha256
from runtime.errors import UserError
from runtime.lock import FolderLock

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MODES = ("generate", "implant", "sdedit")
# PLMS/DDIM: the paper's 50; UniPC and DPM-Solver++ reach PLMS 50's error in fewer (benchmarks/README.md)
DEFAULT_STEPS = {"plms": 50, "ddim": 50, "dpmsolver++": 25, "unipc": 20}
Progress = Callable[[int, int], None]
MAX_OUTPUT_SIZE = 4096  # pixels a side: a typo (100000) would ask for hundreds of GB


@dataclass(frozen=True)
class GenerationOptions:
    """How to generate; every field matches the ``infer.py`` flag of the same name."""

    sampler: str = "plms"
    steps: Optional[int] = None  # None: DEFAULT_STEPS[sampler]
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE
    negative_prompt: str = ""
    alpha_type: Optional[tuple[float, float, float]] = None
    mode: str = "generate"
    strength: float = 0.8  # sdedit only
    dilate: int = 4        # implant only
    precision: str = "fp32"
    output_size: Optional[int] = None  # None: the model size
    grayscale: bool = False
    batch_size: int = 4
    guidance_interval: Optional[tuple[int, int]] = None  # None: every step
    guidance_low: Optional[tuple[float, int]] = None  # None: the low frequencies get guidance_scale too

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise UserError(f"--sampler {self.sampler!r} unknown; choose from {', '.join(sorted(SAMPLERS))}")
        if self.steps is None:
            object.__setattr__(self, "steps", DEFAULT_STEPS[self.sampler])
        if not isinstance(self.steps, int) or self.steps < 1:
            raise UserError(f"--steps must be >= 1, got {self.steps}")
        if not math.isfinite(self.guidance_scale):
            raise UserError(f"--guidance_scale must be a finite number, got {self.guidance_scale}")
        if self.mode not in MODES:
            raise UserError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not (math.isfinite(self.strength) and 0 < self.strength <= 1):
            raise UserError(f"--strength must be in (0, 1], got {self.strength}")
        if self.dilate < 0:
            raise UserError(f"--dilate must be >= 0 pixels, got {self.dilate}")
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.output_size is not None and not 1 <= self.output_size <= MAX_OUTPUT_SIZE:
            raise UserError(f"--output_size must be a number of pixels from 1 to {MAX_OUTPUT_SIZE}, "
                            f"got {self.output_size}")
        if self.batch_size < 1:
            raise UserError(f"--batch_size must be >= 1, got {self.batch_size}")
        if self.alpha_type is not None:
            alpha = tuple(float(a) for a in self.alpha_type)
            if len(alpha) != 3 or not all(math.isfinite(a) for a in alpha):
                raise UserError(f"--alpha_type needs three finite fractions, got {list(self.alpha_type)}")
            gate_schedule(self.steps, alpha)  # fractions summing to 1
            object.__setattr__(self, "alpha_type", alpha)
        if self.guidance_interval is not None:
            object.__setattr__(self, "guidance_interval", check_interval(self.guidance_interval))
        if self.guidance_low is not None:
            object.__setattr__(self, "guidance_low", check_low(self.guidance_low))


def recommended_sampling(config) -> dict:
    """The config's ``sampling:`` section (sampler, steps, guidance_scale, guidance_interval, guidance_low), checked by
    building :class:`GenerationOptions` from it; ``{}`` when the config has none."""
    section = config.get("sampling") if config is not None else None
    if section is None:
        return {}
    plain = dict(section)
    for key in ("guidance_interval", "guidance_low"):
        if plain.get(key) is not None:
            plain[key] = list(plain[key])
    try:
        GenerationOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in plain.items() if v is not None})
    except (UserError, TypeError) as exc:
        raise UserError(f"the checkpoint's config, section sampling: {exc}; fix it with --config") from None
    return {k: v for k, v in plain.items() if v is not None}


def sampling_defaults(config, sampler: Optional[str] = None, steps: Optional[int] = None,
                      guidance_scale: Optional[float] = None,
                      guidance_interval: Optional[Sequence[int]] = None,
                      guidance_low: Optional[Sequence[float]] = None) -> dict:
    """Sampler, steps, guidance scale, interval and low-frequency guidance: each given value, else the
    config's recommendation, else the paper's (PLMS 50, guidance 3 at every step and frequency). The
    recommended steps and interval apply only to the recommended sampler."""
    rec = recommended_sampling(config)
    chosen = sampler or rec.get("sampler", "plms")
    same = chosen == rec.get("sampler", "plms")
    interval = guidance_interval if guidance_interval is not None else (
        rec.get("guidance_interval") if same else None)
    if guidance_scale is None:
        guidance_scale = rec.get("guidance_scale", DEFAULT_GUIDANCE_SCALE)
    if guidance_low is None:
        guidance_low = rec.get("guidance_low")
    return dict(sampler=chosen, steps=steps if steps is not None else (rec.get("steps") if same else None),
                guidance_scale=guidance_scale,
                guidance_interval=tuple(interval) if interval is not None else None,
                guidance_low=tuple(guidance_low) if guidance_low is not None else None)


def load_pipeline(ckpt: str | Path, device: Optional[str | torch.device] = None, precision: str = "fp32",
                  weights: str = "auto", config: Optional[str | Path] = None,
                  local_rank: int = 0) -> DefFillerPipeline:
    """Load every part of a checkpoint once and wrap it in a pipeline on ``device``.

    ``pipe.models.extra`` carries ``checkpoint_path``, ``checkpoint_sha256``, ``weights`` (ema/raw)
    and ``config_path`` for the records.
    """
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = device if isinstance(device, torch.device) else pick_device(device, local_rank)
    if precision == "fp16" and device.type != "cuda":
        raise UserError("--precision fp16 needs a CUDA GPU; use bf16 or fp32 on CPU")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        warnings.warn("--precision bf16: this CPU has no bfloat16 units (AVX512-BF16 or AMX), so torch emulates "
                      "them and sampling is several times slower than fp32 (10x for a convolution measured on one); "
                      "use --precision fp32 here", stacklevel=2)
    ckpt = Path(ckpt)
    models = load_models(ckpt, config=config, device=device, weights=weights)
    models.extra["checkpoint_sha256"] = file_sha256(ckpt)
    models.extra["config_path"] = str(config) if config is not None else None
    models.extra["config_sha256"] = file_sha256(config) if config is not None else None
    return DefFillerPipeline(models, device, PRECISIONS[precision])


def check_upscaler_choice(choice: str | Path) -> None:
    """``auto``, ``none`` or an existing ``.safetensors`` file; one line naming ``--upscaler`` otherwise."""
    if str(choice) in ("auto", "none"):
        return
    path = Path(choice)
    if path.suffix != ".safetensors" or not path.is_file():
        what = "not found" if not path.exists() else "not a .safetensors file"
        raise UserError(f"--upscaler {choice}: {what}; give auto, none or a file written by "
                        "python -m training.upscaler")


def use_upscaler(pipe: DefFillerPipeline, choice: str | Path = "auto") -> None:
    """Set the pipeline's mask-guided upscaler: ``auto`` (the checkpoint's, if any), ``none`` or a file."""
    if str(choice) == "auto":
        return
    if str(choice) == "none":
        pipe.models.upscaler = None
        pipe.models.extra.pop("upscaler", None)
        return
    check_upscaler_choice(choice)
    pipe.models.upscaler = read_upscaler(choice, pipe.image_size).to(pipe.device)
    pipe.models.extra["upscaler"] = upscaler_label(choice)


def check_options(pipe: DefFillerPipeline, opts: GenerationOptions) -> None:
    """What only the loaded model can tell: step counts its schedule holds, fp16 on CUDA only."""
    try:  # e.g. UniPC beyond its 981 start
        start_timestep(opts.sampler, pipe.models.diffusion.alphas_cumprod, opts.steps,
                       spacing=pipe.models.diffusion.timestep_spacing)
    except ValueError as err:
        raise UserError(f"--steps {opts.steps}: {err}") from None
    if PRECISIONS[opts.precision] != pipe.dtype:
        raise UserError(f"options ask for --precision {opts.precision} but the pipeline was loaded with "
                        f"{pipe.dtype}; load it with precision={opts.precision!r}")


def distilled_guidance_note(pipe: DefFillerPipeline, guidance_scale: float) -> Optional[str]:
    """A warning when a guidance-distilled model is sampled with guidance other than 1, else None."""
    teacher = pipe.models.extra.get("metadata", {}).get("teacher_guidance")
    if not teacher or guidance_scale == 1:
        return None
    return (f"this model was distilled to give its teacher's {teacher} unguided; guidance {guidance_scale:g} on "
            "top extrapolates from a branch it was not trained for")


@torch.no_grad()
def generate_batch(pipe: DefFillerPipeline, masks: torch.Tensor, category_indices: Sequence[int],
                   prompts: Sequence[str], seeds: Sequence[int], opts: GenerationOptions,
                   backgrounds: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One batch, no file I/O: B x C x H x W images in [0, 1] at the model size.

    ``masks``: B x H x W in {0, 1} at ``pipe.image_size``; ``seeds``: one per image (the starting
    noise depends only on it); ``backgrounds``: B x 3 (or C) x H x W in [0, 1] at the model size,
    required for ``implant`` (kept outside the dilated mask) and ``sdedit`` (the start image).
    """
    size, b = pipe.image_size, masks.shape[0]
    if masks.dim() != 3 or tuple(masks.shape[1:]) != (size, size):
        raise UserError(f"masks must be B x {size} x {size}, got {tuple(masks.shape)}")
    if not (len(category_indices) == len(prompts) == len(seeds) == b):
        raise UserError(f"{b} masks need as many category indices, prompts and seeds "
                        f"(got {len(category_indices)}, {len(prompts)}, {len(seeds)})")
    masks = (masks > 0.5).float()
    device = pipe.device
    sem = one_hot_sem(masks, torch.as_tensor(list(category_indices)), pipe.in_dim)
    offset = pipe.models.diffusion.offset_noise
    noise = torch.stack([seed_noise(s, pipe.latent_shape(1)[1:], offset) for s in seeds]).to(device)
    cond, uncond = pipe.conditioning(sem, list(prompts), opts.negative_prompt)
    hook, start_step, x = None, 0, noise
    if opts.mode != "generate":
        if backgrounds is None or backgrounds.shape[0] != b or tuple(backgrounds.shape[-2:]) != (size, size):
            raise UserError(f"mode {opts.mode} needs one background image per mask at {size}x{size}")
        real = backgrounds.float().to(device) * 2 - 1
        if pipe.image_channels == 1 and real.shape[1] != 1:
            real = real.mean(1, keepdim=True)
        z_real = pipe.encode_images(real)
    if opts.mode == "implant":
        region = dilate(masks.unsqueeze(1).to(device), opts.dilate)
        hook = blend_hook(z_real, latent_mask(region, noise.shape[-1]), pipe.models.diffusion, noise)
    elif opts.mode == "sdedit":
        start_step = opts.steps - max(1, round(opts.strength * opts.steps))
        t0 = start_timestep(opts.sampler, pipe.models.diffusion.alphas_cumprod, opts.steps, start_step,
                            pipe.models.diffusion.timestep_spacing)
        x = pipe.models.diffusion.q_sample(z_real, torch.full((b,), t0, device=device), noise)
    latents = pipe.sample(cond, uncond, x, opts.sampler, opts.steps, opts.guidance_scale, hook=hook,
                          alpha_type=opts.alpha_type, start_step=start_step,
                          guidance_interval=opts.guidance_interval, guidance_low=opts.guidance_low)
    images = pipe.decode(latents)
    if opts.mode == "implant":
        images = composite(images, (real + 1) / 2, region)
    if not torch.isfinite(images).all():
        raise UserError("generation produced NaN/inf pixels; try --precision fp32 or a smaller --guidance_scale")
    return images


def settings_for(pipe: DefFillerPipeline, opts: GenerationOptions, spec: Optional[JobSpec] = None,
                 background: Optional[Path] = None) -> dict:
    """The ``settings`` of ``generation.json``: everything that changes the output."""
    extra = pipe.models.extra
    settings = dict(checkpoint=str(extra.get("checkpoint_path")), checkpoint_sha256=extra.get("checkpoint_sha256"),
                    config=extra.get("config_path"), config_sha256=extra.get("config_sha256"),
                    sampler=opts.sampler, steps=opts.steps, guidance_scale=opts.guidance_scale,
                    guidance_interval=list(opts.guidance_interval) if opts.guidance_interval else None,
                    guidance_low=list(opts.guidance_low) if opts.guidance_low else None,
                    negative_prompt=opts.negative_prompt,
                    alpha_type=list(opts.alpha_type) if opts.alpha_type is not None else None,
                    output_size=opts.output_size or pipe.image_size, mode=opts.mode,
                    strength=opts.strength if opts.mode == "sdedit" else None,
                    dilate=opts.dilate if opts.mode == "implant" else None,
                    background=str(Path(background).resolve()) if background is not None else None,
                    precision=opts.precision, weights=extra.get("weights"), grayscale=opts.grayscale)
    if pipe.models.upscaler is not None and settings["output_size"] > pipe.image_size:
        settings["upscaler"] = extra.get("upscaler") or f"embedded: {extra.get('metadata', {}).get('upscaler', '?')}"
    if spec is not None:
        settings.update(spec.settings())
    return settings


def record_for(mask: str | Path, category: str, prompt: str, seed: int, opts: GenerationOptions,
               source: Optional[str | Path] = None) -> dict:
    """One image's entry in ``generation.json``."""
    record = dict(mask=str(mask), category=category, prompt=prompt, seed=seed, sampler=opts.sampler,
                  steps=opts.steps, guidance_scale=opts.guidance_scale)
    if opts.guidance_interval is not None:
        record["guidance_interval"] = list(opts.guidance_interval)
    if opts.guidance_low is not None:
        record["guidance_low"] = list(opts.guidance_low)
    if source is not None:
        record["background" if opts.mode == "implant" else "init_image"] = str(source)
    return record


def _background_batch(paths: Sequence[Path], size: int) -> torch.Tensor:
    return (torch.cat([load_background(p, size) for p in paths]) + 1) / 2


def generate_dataset(pipe: DefFillerPipeline, jobs: JobSpec, out_dir: str | Path, opts: GenerationOptions,
                     background: Optional[str | Path] = None, rank: int = 0, world: int = 1,
                     progress: Optional[Progress] = None, preview: bool = True) -> Path:
    """Generate every job of ``jobs`` into the paired dataset ``out_dir`` and return ``out_dir``.

    Resumes (pairs already recorded are skipped); a folder made with other settings is refused.
    ``background``: image or folder for implant/sdedit (picked round-robin by job index).
    ``progress(done, total)`` is called after every batch of this rank. With ``world > 1`` the jobs
    are sharded round-robin and ``torch.distributed`` must be initialised; rank 0 merges the records.
    """
    if (opts.mode == "generate") != (background is None):
        raise UserError("mode implant/sdedit needs a background image or folder (and mode generate none)")
    check_options(pipe, opts)
    categories = categories_from_config(pipe.models.config.get("data", {}).get("categories"))
    all_jobs = build_jobs(jobs.mask_dir, categories, jobs.num_per_mask, jobs.seed, jobs.prompt, jobs.skip_empty)
    extras = list_backgrounds(Path(background)) if background is not None else []
    root = Path(out_dir)
    lock = _lock_folder(root, rank, world, pipe.device)
    try:
        _generate_into(pipe, all_jobs, root, opts, settings_for(pipe, opts, jobs, background), extras, rank, world,
                       progress, preview)
    finally:
        if lock is not None:
            lock.release()
    return root


def _lock_folder(root: Path, rank: int, world: int, device: torch.device) -> Optional[FolderLock]:
    """Rank 0 locks and prepares the folder; every rank of the job learns whether it may write."""
    lock, error = None, None
    if rank == 0:
        try:
            prepare_root(root)
            lock = FolderLock(root, INFER_FIX).acquire()
            prepare_folder(root)  # now no other writer is live: stale temporary files can go
        except UserError as exc:
            error = str(exc)
    if world > 1:
        box = [error]
        torch.distributed.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
        error = box[0]
    if error is not None:
        if lock is not None:
            lock.release()
        raise UserError(error)
    return lock


def _generate_into(pipe: DefFillerPipeline, all_jobs: list[Job], root: Path, opts: GenerationOptions,
                   settings: dict, extras: list[Path], rank: int, world: int, progress: Optional[Progress],
                   preview: bool) -> None:
    writer = PairedWriter(root, settings, rank)  # flushes its record before the first pair: a stop resumes
    try:
        _generate_batches(pipe, all_jobs, root, opts, writer, extras, rank, world, progress)
    finally:  # SIGTERM (SystemExit), Ctrl-C, a full disk: what was written stays recorded
        writer.flush_quietly()
    if world > 1:
        torch.distributed.barrier()
    if rank == 0:
        writer.merge()
        if preview:
            write_preview(root, [j.name for j in all_jobs])


def _generate_batches(pipe: DefFillerPipeline, all_jobs: list[Job], root: Path, opts: GenerationOptions,
                      writer: PairedWriter, extras: list[Path], rank: int, world: int,
                      progress: Optional[Progress]) -> None:
    index = {job.name: i for i, job in enumerate(all_jobs)}
    todo = [j for j in shard(all_jobs, rank, world) if not writer.done(j.name)]
    size, out_size = pipe.image_size, opts.output_size or pipe.image_size
    done = 0
    if progress is not None:
        progress(0, len(todo))
    for lo in range(0, len(todo), opts.batch_size):
        batch: list[Job] = todo[lo:lo + opts.batch_size]
        picked = [extras[index[j.name] % len(extras)] for j in batch] if extras else [None] * len(batch)
        masks = torch.stack([mask_tensor(j.mask_path, size) for j in batch])
        backgrounds = _background_batch(picked, size) if extras else None
        images = generate_batch(pipe, masks, [j.category.index for j in batch], [j.prompt for j in batch],
                                [j.seed for j in batch], opts, backgrounds)
        ups = pipe.models.upscaler if out_size > size else None
        big = torch.stack([mask_tensor(j.mask_path, ups.size) for j in batch]) if ups is not None else None
        images = upscale_images(images, out_size, big, ups)
        for j, img, source in zip(batch, images, picked):
            record = record_for(j.mask_path, j.category.name, j.prompt, j.seed, opts, source)
            writer.write(j.name, img, mask_tensor(j.mask_path, out_size), record, opts.grayscale)
        writer.flush()
        done += len(batch)
        if progress is not None:
            progress(done, len(todo))


__all__ = ["DEFAULT_STEPS", "MODES", "PRECISIONS", "FolderLock", "GenerationOptions", "JobSpec", "PairedWriter",
           "check_options",
           "generate_batch", "generate_dataset", "load_pipeline", "recommended_sampling", "record_for",
           "resize_images", "sampling_defaults", "settings_for", "upscale_images", "use_upscaler"]
