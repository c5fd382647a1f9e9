"""Export a trained checkpoint for release: one small ``.safetensors`` with its config and sampling settings.

    python -m inference.export --ckpt OUTPUT/exp/checkpoints/latest.safetensors --out models/exp.safetensors \\
        --sampling sampler=unipc steps=20 guidance_scale=3 guidance_low=[1,15]

The exported file holds the EMA weights (``--weights auto``: when the checkpoint has them) folded into
the UNet, every weight in half precision (``--dtype fp16``; the diffusion schedule stays in float32),
no optimiser state, and the config with a ``sampling:`` section (``infer.py`` and the page use it
when no flag says otherwise). Its metadata names the source checkpoint (SHA-256), the training
data (folder, split file and the split's SHA-256, as the training run recorded them) and the weights
used. No ``.yaml`` sidecar is written: the config travels inside the file. A release file given as
``--ckpt`` (to change its recommended sampling) keeps its source checkpoint, SHA-256 and weights in the
new file's metadata and adds ``previous_release_sha256``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

import torch
from omegaconf import OmegaConf

from inference.generate import recommended_sampling
from ldm.build import build_models
from ldm.checkpoint import (
    PROVENANCE_KEYS,
    apply_weights_choice,
    load_models,
    read_checkpoint,
    read_upscaler,
    save_checkpoint,
    upscaler_label,
)
from ldm.config import SAMPLING_SCHEMA
from runtime import options as O
from runtime.digest import file_sha256
from runtime.errors import UserError, run_cli

SAMPLING_KEYS = tuple(SAMPLING_SCHEMA)  # the config's sampling: section
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
KEEP_FP32 = ("diffusion",)  # the schedule's buffers: a half-precision alphas_cumprod is refused on load
RELEASE_KEYS = {"source_checkpoint", "source_sha256", "weights"}  # what only a release file's metadata holds


def export_release(ckpt: str | Path, out: str | Path, sampling: Optional[dict] = None, weights: str = "auto",
                   dtype: str = "fp16", max_mb: Optional[float] = None, upscaler: Optional[str | Path] = None) -> Path:
    """Write the release file ``out`` from ``ckpt`` and check that it loads; returns ``out``.

    ``upscaler``: a mask-guided upscaler file to embed (``python -m training.upscaler``), ``"none"`` to leave out
    one ``ckpt`` embeds, ``None`` to keep what ``ckpt`` has."""
    if dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    out = Path(out)
    if out.suffix != ".safetensors":
        raise UserError(f"--out {out}: the release file must end in .safetensors")
    if out.resolve() == Path(ckpt).resolve():
        raise UserError(f"--out {out} is the checkpoint being exported; choose another file")
    source = read_checkpoint(ckpt)
    if source.config is None:
        raise UserError(f"{ckpt} carries no config; export a checkpoint written by main.py")
    used = apply_weights_choice(source, weights)
    config = OmegaConf.create(OmegaConf.to_container(source.config, resolve=True))
    if sampling:
        config.sampling = {**(OmegaConf.to_container(config.sampling) if "sampling" in config else {}), **sampling}
    recommended_sampling(config)  # a bad sampling value is refused before anything is written
    upscaler_note = source.metadata.get("upscaler")  # which upscaler file a release embeds
    if upscaler is not None:
        source.sections.pop("upscaler", None)
        config.pop("upscaler", None)
        upscaler_note = None
    if upscaler is not None and str(upscaler) != "none":
        side = build_models(config, parts=("model", "autoencoder"), device="meta").image_size
        module = read_upscaler(upscaler, side)
        source.sections["upscaler"] = module.state_dict()
        config.upscaler = read_checkpoint(upscaler).config.upscaler
        upscaler_note = upscaler_label(upscaler)
    sections = {part: {k: v.to(DTYPES[dtype]) if v.is_floating_point() and part not in KEEP_FP32 else v
                       for k, v in tensors.items()}
                for part, tensors in source.sections.items() if part != "ema"}
    train = config.get("train") or {}
    metadata = {"source_checkpoint": Path(ckpt).name, "source_sha256": file_sha256(ckpt), "weights": used,
                "dtype": dtype, "split": str(train.get("split")),
                "iteration": str(source.metadata.get("iteration", "")), "init": str(source.metadata.get("init", "")),
                **{k: str(source.metadata.get(k, "")) for k in PROVENANCE_KEYS if k != "split"}}
    if upscaler_note:
        metadata["upscaler"] = upscaler_note
    if RELEASE_KEYS <= set(source.metadata):  # a release re-exported (new sampling): it keeps its training origin
        metadata.update({k: source.metadata[k] for k in RELEASE_KEYS},
                        previous_release_sha256=metadata["source_sha256"])
    save_checkpoint(out, sections, config, metadata, sidecar=False)
    load_models(out)  # the release must load strictly into the architecture its config describes
    size_mb = out.stat().st_size / 2**20
    if max_mb is not None and size_mb > max_mb:
        out.unlink()
        raise UserError(f"{out}: {size_mb:.1f} MB is over --max_mb {max_mb:g}; use --dtype fp16 or a smaller model")
    return out


def parse_sampling(items: Sequence[str]) -> dict:
    """``key=value`` items (YAML values) of the ``sampling:`` section."""
    out = {}
    for key, value in O.parse_set(items, "--sampling"):
        if key not in SAMPLING_KEYS:
            raise UserError(f"--sampling {key}: unknown; use {', '.join(SAMPLING_KEYS)}")
        out[key] = value
    return out


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", type=Path, required=True, help="trained checkpoint (.safetensors written by main.py)")
    p.add_argument("--out", type=Path, required=True, help="release file to write (.safetensors)")
    p.add_argument("--sampling", nargs="*", default=[], metavar="KEY=VALUE",
                   help="recommended sampling settings: sampler, steps, guidance_scale, guidance_interval=[LO,HI], "
                        "guidance_low=[SCALE,SIZE]")
    p.add_argument("--weights", choices=("auto", "ema", "raw"), default="auto",
                   help="EMA or trained weights; auto: EMA when the checkpoint has them (default)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp16", help="weight precision (default: %(default)s)")
    p.add_argument("--max_mb", type=float, default=None, help="refuse a release file larger than this")
    p.add_argument("--upscaler", default=None, metavar="FILE|none",
                   help="embed this mask-guided upscaler (python -m training.upscaler); none: leave out the one --ckpt "
                        "has (default: keep it)")
    args = p.parse_args(argv)
    out = export_release(args.ckpt, args.out, parse_sampling(args.sampling), args.weights, args.dtype, args.max_mb,
                         args.upscaler)
    meta = json.dumps({"MB": round(out.stat().st_size / 2**20, 2), "sha256": file_sha256(out)[:16]})
    print(f"wrote {out} {meta}")
    return 0


if __name__ == "__main__":
    run_cli(main)
