"""Generate a paired defect dataset from a folder of masks.

    python infer.py --ckpt OUTPUT/exp/checkpoints/latest.safetensors \\
        --mask_dir DATA/SD-saliency-900/Ground_truth --save_folder_name sd900_gen --output_size 200

writes ``<folder>/<save_folder_name>/Source_Images/*.png`` (generated images),
``Ground_truth/*.png`` (the conditioning masks, binary, same names) and ``generation.json``
(checkpoint hash, prompt, seed, sampler, steps, guidance per image), plus ``preview.png`` (the first
24 pairs, masks outlined in red). The category of each mask comes
from ``caption.json`` or its filename prefix (In/Pa/Sc) unless --prompt forces one. Masks must be
lossless (.png .bmp .tif .tiff; dotfiles are ignored); a non-square mask is centre-cropped to a
square as in training. Re-running the same command resumes; any other setting that changes the
output (checkpoint, masks, prompt, seed, num_per_mask, sampler, size, grayscale, ...) into the same
folder is refused, and so is a second run while one is writing there (the folder is locked).

Also: --background IMG_OR_DIR implants defects into real defect-free images (latent blending +
composite outside the dilated mask); --init_image IMG_OR_DIR --strength s starts from a noised real
image (SDEdit). ``torchrun --nproc_per_node=N infer.py ...`` shards the masks across ranks.
"""
from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from pathlib import Path
from typing import Optional

import torch
from tqdm.auto import tqdm

from inference.generate import (
    DEFAULT_STEPS,
    PRECISIONS,
    GenerationOptions,
    check_upscaler_choice,
    distilled_guidance_note,
    generate_dataset,
    load_pipeline,
    sampling_defaults,
    use_upscaler,
)
from inference.jobs import JobSpec
from inference.writer import RECORD
from ldm.diffusion.samplers import SAMPLERS
from runtime.cli import add_device, add_threads
from runtime.distributed import cleanup, init_distributed
from runtime.errors import UserError, run_cli


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: FOLDER/SAVE_FOLDER_NAME, the original's two flags)")
    p.add_argument("--folder", default="generation_samples", help="root folder for outputs (default: %(default)s)")
    p.add_argument("--mask_dir", default="DATA/SD-saliency-900/Ground_truth", help="folder of mask images")
    p.add_argument("--prompt", default=None, help="force this prompt for every mask (default: per category)")
    p.add_argument("--save_folder_name", default="samples", help="output subfolder of FOLDER (default: %(default)s)")
    p.add_argument("--guidance_scale", type=float, default=None,
                   help="classifier-free guidance (default: the checkpoint's recommendation, else 3)")
    p.add_argument("--guidance_interval", type=int, nargs=2, default=None, metavar=("LO", "HI"),
                   help="guide only at timesteps LO <= t <= HI (default: the checkpoint's recommendation, else "
                        "every step; 0 999 guides every step)")
    p.add_argument("--guidance_low", type=float, nargs=2, default=None, metavar=("SCALE", "SIZE"),
                   help="guide the low frequencies (a SIZE x SIZE box average of the guidance, in model pixels; "
                        "0: each image's mean) with SCALE instead of --guidance_scale (default: the "
                        "checkpoint's recommendation, else the same scale at every frequency)")
    p.add_argument("--batch_size", type=int, default=4, help="masks per batch")
    p.add_argument("--no_plms", action="store_true", help="use DDIM (same as --sampler ddim)")
    p.add_argument("--negative_prompt", default="", help="prompt for the unconditional branch")
    p.add_argument("--ckpt", type=Path, default=None,
                   help="checkpoint to sample from (default: newest .safetensors under OUTPUT/)")
    p.add_argument("--config", type=Path, default=None, help="YAML config (default: the checkpoint's own)")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default=None,
                   help="default: the checkpoint's recommendation (its config's sampling: section), else plms "
                        "(the paper's); unipc needs the fewest steps (benchmarks/README.md)")
    p.add_argument("--steps", type=int, default=None,
                   help="sampler steps (default: the checkpoint's recommendation for its sampler, else "
                        + ", ".join(f"{k} {v}" for k, v in DEFAULT_STEPS.items()) + ")")
    p.add_argument("--seed", type=int, default=0, help="base seed; each image's seed derives from it")
    p.add_argument("--num_per_mask", type=int, default=1, help="images per mask")
    p.add_argument("--output_size", type=int, default=None, help="output side in pixels (e.g. 200)")
    p.add_argument("--upscaler", default="auto", metavar="auto|none|FILE",
                   help="above the model's size, sharpen along the mask: auto (the checkpoint's mask-guided upscaler, "
                        "if it has one), none (bicubic only) or a file from python -m training.upscaler "
                        "(default: %(default)s)")
    add_device(p, default_text="auto; under torchrun, this rank's GPU")
    add_threads(p, 0, note="; under torchrun on a CPU the cores are shared out between the ranks")
    p.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32",
                   help="network precision: fp32, or bf16/fp16 autocast (fp16 needs a GPU) (default: fp32)")
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


def options_from_args(args: argparse.Namespace, config=None) -> GenerationOptions:
    """Flags -> validated options (one-line errors naming the flag); sampling settings not given come
    from ``config``'s ``sampling:`` section (the checkpoint's recommendation), else the paper's."""
    if args.background and args.init_image:
        raise UserError("use either --background (implant) or --init_image (SDEdit), not both")
    mode = "implant" if args.background else "sdedit" if args.init_image else "generate"
    sampling = sampling_defaults(config, args.sampler or ("ddim" if args.no_plms else None), args.steps,
                                 args.guidance_scale, args.guidance_interval, args.guidance_low)
    return GenerationOptions(**sampling, negative_prompt=args.negative_prompt,
                             alpha_type=tuple(args.alpha_type) if args.alpha_type else None, mode=mode,
                             strength=args.strength, dilate=args.dilate, precision=args.precision,
                             output_size=args.output_size, grayscale=args.grayscale, batch_size=args.batch_size)


def tqdm_progress(desc: str, enabled: bool):
    """A ``progress(done, total)`` callback drawing a tqdm bar with images per second."""
    state: dict = {}

    def progress(done: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = tqdm(total=total, desc=desc, unit="img", disable=not enabled)
            state["start"] = time.perf_counter()
            return
        bar = state["bar"]
        bar.update(done - bar.n)
        bar.set_postfix(img_s=f"{done / max(time.perf_counter() - state['start'], 1e-9):.2f}")
        if done >= total:
            bar.close()
    return progress


def stop_on_sigterm() -> None:
    """SIGTERM ends the run like Ctrl-C: the records of the images written so far are flushed; exit 143."""
    def stop(signum, frame) -> None:
        raise SystemExit(128 + signum)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    options_from_args(args)  # bad flags are refused before the checkpoint loads
    check_upscaler_choice(args.upscaler)
    spec = JobSpec(Path(args.mask_dir), args.num_per_mask, args.seed, args.prompt, args.skip_empty_masks)
    info = init_distributed(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    rank, world = info.rank, info.world_size
    ckpt = args.ckpt or find_default_ckpt()
    if rank == 0:
        print(f"checkpoint {ckpt}")
    pipe = load_pipeline(ckpt, device=info.device, precision=args.precision, weights=args.weights,
                         config=args.config)
    use_upscaler(pipe, args.upscaler)
    opts = options_from_args(args, pipe.models.config)
    if rank == 0:
        if pipe.models.extra["weights"] == "ema":
            print("using the checkpoint's EMA weights (--weights raw for the trained ones)")
        interval = f" at timesteps {opts.guidance_interval[0]}-{opts.guidance_interval[1]}" \
            if opts.guidance_interval else ""
        low = f", low frequencies (box {opts.guidance_low[1]}) {opts.guidance_low[0]:g}" if opts.guidance_low else ""
        print(f"sampling: {opts.sampler} {opts.steps} steps, guidance {opts.guidance_scale:g}{interval}{low}")
        if pipe.models.upscaler is not None and (opts.output_size or 0) > pipe.image_size:
            print(f"upscaling: mask-guided to {pipe.models.upscaler.size} px (--upscaler none for bicubic only)")
        note = distilled_guidance_note(pipe, opts.guidance_scale)
        if note:
            print(f"note: {note}")
    progress = tqdm_progress(f"generating ({opts.sampler}, {opts.steps} steps)", rank == 0)
    root = generate_dataset(pipe, spec, args.out or Path(args.folder) / args.save_folder_name, opts,
                            background=args.background or args.init_image, rank=rank, world=world,
                            progress=progress)
    if rank == 0:
        count = len(json.loads((root / RECORD).read_text())["images"])
        preview = root / "preview.png"
        print(f"done: {count} pairs in {root} (records in {RECORD}"
              + (f", first pairs with mask outlines in {preview.name})" if preview.is_file() else ")"))
    cleanup(info)
    return 0



def entry_point() -> None:
    """``python infer.py`` / the ``deffiller-infer`` script: :func:`main` with one-line errors and exit codes;
    SIGTERM stops it with its records flushed (exit 143)."""
    stop_on_sigterm()
    run_cli(main)


if __name__ == "__main__":
    entry_point()
