#!/usr/bin/env python
"""Generate a paired defect dataset from a folder of masks.

    python infer.py --ckpt OUTPUT/exp/checkpoints/latest.safetensors \\
        --mask_dir DATA/SD-saliency-900/Ground_truth --save_folder_name sd900_gen --output_size 200

writes ``<folder>/<save_folder_name>/Source_Images/*.png`` (generated images),
``Ground_truth/*.png`` (the conditioning masks, binary, same names) and ``generation.json``
(checkpoint hash, prompt, seed, sampler, steps, guidance per image), plus ``preview.png`` (the first
24 pairs, masks outlined in red). The category of each mask comes
from ``caption.json`` or its filename prefix (In/Pa/Sc) unless --prompt forces one. Re-running the
same command resumes; other settings into the same folder are refused.

Also: --background IMG_OR_DIR implants defects into real defect-free images (latent blending +
composite outside the dilated mask); --init_image IMG_OR_DIR --strength s starts from a noised real
image (SDEdit). ``torchrun --nproc_per_node=N infer.py ...`` shards the masks across ranks.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dataset.categories import categories_from_config
from dataset.sem_dataset import one_hot_sem
from inference.implant import blend_hook, composite, dilate, latent_mask, list_backgrounds, load_background
from inference.jobs import build_jobs, job_noise, mask_tensor, shard
from inference.preview import write_preview
from inference.writer import PairedWriter
from ldm.checkpoint import file_sha256, load_models
from ldm.diffusion.samplers import SAMPLERS, start_timestep
from ldm.errors import UserError, run_cli
from ldm.pipeline import DefFillerPipeline

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# PLMS/DDIM: the paper's 50. UniPC 20 and DPM-Solver++ 25 solve the same ODE from the same start with
# 0.2-1.2x and 0.5-1.9x PLMS 50's error on four demo checkpoints, far under one grey level of the
# output (benchmarks/README.md)
DEFAULT_STEPS = {"plms": 50, "ddim": 50, "dpmsolver++": 25, "unipc": 20}


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", default="generation_samples", help="root folder for outputs")
    p.add_argument("--mask_dir", default="DATA/SD-saliency-900/Ground_truth", help="folder of mask images")
    p.add_argument("--prompt", default=None, help="force this prompt for every mask (default: per category)")
    p.add_argument("--save_folder_name", default="samples", help="output subfolder")
    p.add_argument("--guidance_scale", type=float, default=3.0, help="classifier-free guidance (2-4 is best)")
    p.add_argument("--batch_size", type=int, default=4, help="masks per batch")
    p.add_argument("--no_plms", action="store_true", help="use DDIM (same as --sampler ddim)")
    p.add_argument("--negative_prompt", default="", help="prompt for the unconditional branch")
    p.add_argument("--ckpt", type=Path, default=None,
                   help="checkpoint to sample from (default: newest .safetensors under OUTPUT/)")
    p.add_argument("--config", type=Path, default=None, help="YAML config (default: the checkpoint's own)")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default=None,
                   help="default plms (the paper's, 50 steps); for speed: unipc (20 steps, 2.5x fewer model "
                        "evaluations, 0.2-1.2x PLMS 50's ODE error on the demo checkpoints measured, far "
                        "under one grey level; see benchmarks/README.md)")
    p.add_argument("--steps", type=int, default=None,
                   help="sampler steps (default: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_STEPS.items()) + ")")
    p.add_argument("--seed", type=int, default=0, help="base seed; each image's seed derives from it")
    p.add_argument("--num_per_mask", type=int, default=1, help="images per mask")
    p.add_argument("--output_size", type=int, default=None, help="output side in pixels (e.g. 200)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32")
    p.add_argument("--weights", choices=("auto", "ema", "raw"), default="auto",
                   help="EMA or trained weights; auto: EMA when the checkpoint has them (default)")
    p.add_argument("--alpha_type", type=float, nargs=3, default=None, metavar=("FULL", "DECAY", "OFF"),
                   help="GLIGEN scheduled gates, e.g. 0.7 0 0.3 (default: gates always on, as the paper)")
    p.add_argument("--background", type=Path, default=None,
                   help="defect-free image or folder: implant generated defects into it")
    p.add_argument("--dilate", type=int, default=4, help="implant mode: mask dilation in pixels")
    p.add_argument("--init_image", type=Path, default=None, help="image or folder to start from (SDEdit)")
    p.add_argument("--strength", type=float, default=0.8, help="SDEdit: fraction of the steps to run (0-1]")
    p.add_argument("--grayscale", action="store_true", help="save images as 8-bit grayscale")
    p.add_argument("--skip_empty_masks", action="store_true", help="skip masks with no foreground")
    return p.parse_args(argv)


def find_default_ckpt(root: Path = Path("OUTPUT")) -> Path:
    candidates = sorted(root.glob("**/*.safetensors"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    if not candidates:
        raise UserError("no --ckpt given and no checkpoint under OUTPUT/; train one with `python main.py --name exp` "
                        "or pass --ckpt PATH")
    return candidates[-1]


def setup_distributed() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return rank, world, local


def pick_device(arg: Optional[str], local_rank: int, precision: str) -> torch.device:
    device = torch.device(arg) if arg else torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda requested but no CUDA GPU is available; use --device cpu")
    if precision == "fp16" and device.type != "cuda":
        raise UserError("--precision fp16 needs a CUDA GPU; use bf16 or fp32 on CPU")
    return device


def image_batch(paths: list[Path], size: int, channels: int) -> torch.Tensor:
    """Real images in [-1, 1] with the model's channel count (grey = mean of RGB)."""
    images = torch.cat([load_background(p, size) for p in paths])
    return images.mean(1, keepdim=True) if channels == 1 else images


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    sampler = args.sampler or ("ddim" if args.no_plms else "plms")
    args.steps = args.steps if args.steps is not None else DEFAULT_STEPS[sampler]
    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    if not 0 < args.strength <= 1:
        raise UserError("--strength must be in (0, 1]")
    if args.background and args.init_image:
        raise UserError("use either --background (implant) or --init_image (SDEdit), not both")
    rank, world, local = setup_distributed()
    device = pick_device(args.device, local, args.precision)
    ckpt = args.ckpt or find_default_ckpt()
    if rank == 0:
        print(f"checkpoint {ckpt}")
    models = load_models(ckpt, config=args.config, device=device, weights=args.weights)
    if rank == 0 and models.extra["weights"] == "ema":
        print("using the checkpoint's EMA weights (--weights raw for the trained ones)")
    try:  # step counts the schedule cannot hold (e.g. UniPC beyond its 981 start)
        start_timestep(sampler, models.diffusion.alphas_cumprod, args.steps)
    except ValueError as err:
        raise UserError(f"--steps {args.steps}: {err}") from None
    pipe = DefFillerPipeline(models, device, PRECISIONS[args.precision])
    categories = categories_from_config(models.config.get("data", {}).get("categories"))
    jobs = build_jobs(Path(args.mask_dir), categories, args.num_per_mask, args.seed, args.prompt,
                      args.skip_empty_masks)
    size = pipe.image_size
    out_size = args.output_size or size
    mode = "implant" if args.background else "sdedit" if args.init_image else "generate"
    settings = dict(checkpoint=str(ckpt), checkpoint_sha256=file_sha256(ckpt), sampler=sampler, steps=args.steps,
                    guidance_scale=args.guidance_scale, seed=args.seed, negative_prompt=args.negative_prompt,
                    alpha_type=args.alpha_type, output_size=out_size, mode=mode,
                    strength=args.strength if mode == "sdedit" else None, precision=args.precision,
                    weights=models.extra["weights"])
    writer = PairedWriter(Path(args.folder) / args.save_folder_name, settings, rank)
    index = {job.name: i for i, job in enumerate(jobs)}
    todo = [j for j in shard(jobs, rank, world) if not writer.done(j.name)]
    extras = list_backgrounds(args.background or args.init_image) if mode != "generate" else []
    bar = tqdm(total=len(todo), desc=f"generating ({sampler}, {args.steps} steps)", unit="img", disable=rank != 0)
    start, made = time.perf_counter(), 0
    for lo in range(0, len(todo), args.batch_size):
        batch = todo[lo:lo + args.batch_size]
        masks = torch.stack([mask_tensor(j.mask_path, size) for j in batch])
        sem = one_hot_sem(masks, torch.tensor([j.category.index for j in batch]), pipe.in_dim)
        noise = torch.stack([job_noise(j, pipe.latent_shape(1)[1:]) for j in batch]).to(device)
        cond, uncond = pipe.conditioning(sem, [j.prompt for j in batch], args.negative_prompt)
        hook, start_step, x = None, 0, noise
        picked = [extras[index[j.name] % len(extras)] for j in batch] if extras else []
        if mode != "generate":
            real = image_batch(picked, size, pipe.image_channels).to(device)
            z_real = pipe.encode_images(real)
        if mode == "implant":
            region = dilate(masks.unsqueeze(1).to(device), args.dilate)
            keep = latent_mask(region, noise.shape[-1])
            hook = blend_hook(z_real, keep, models.diffusion, noise)
        elif mode == "sdedit":
            start_step = args.steps - max(1, round(args.strength * args.steps))
            t0 = start_timestep(sampler, models.diffusion.alphas_cumprod, args.steps, start_step)
            x = models.diffusion.q_sample(z_real, torch.full((len(batch),), t0, device=device), noise)
        latents = pipe.sample(cond, uncond, x, sampler, args.steps, args.guidance_scale, hook=hook,
                              alpha_type=args.alpha_type, start_step=start_step)
        images = pipe.decode(latents)
        if mode == "implant":
            images = composite(images, (real + 1) / 2, region)
        images = resize_images(images, out_size)
        for j, img, extra in zip(batch, images, picked or [None] * len(batch)):
            record = dict(mask=str(j.mask_path), category=j.category.name, prompt=j.prompt, seed=j.seed,
                          sampler=sampler, steps=args.steps, guidance_scale=args.guidance_scale)
            if extra is not None:
                record["background" if mode == "implant" else "init_image"] = str(extra)
            writer.write(j.name, img, mask_tensor(j.mask_path, out_size), record, args.grayscale)
        writer.flush()
        made += len(batch)
        bar.update(len(batch))
        bar.set_postfix(img_s=f"{made / (time.perf_counter() - start):.2f}")
    bar.close()
    writer.flush()
    if world > 1:
        torch.distributed.barrier()
    if rank == 0:
        path = writer.merge()
        preview = write_preview(writer.root, [j.name for j in jobs])
        print(f"done: {len(jobs)} pairs in {writer.root} (records in {path.name}"
              + (f", first pairs with mask outlines in {preview.name})" if preview else ")"))
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    run_cli(main)
