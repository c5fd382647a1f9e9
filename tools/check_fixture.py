#!/usr/bin/env python
"""Check our implementation against a numerical reference made with the original GLIGEN/DefFiller code.

    python tools/check_fixture.py ../shared/fixtures/gligen_sem_tiny

reads PREFIX.yaml (config, original schema) and PREFIX.npz (quantised weights, inputs, outputs), runs
the mask encoder, downsampler, UNet, PLMS/DDIM samplers with guidance 3, and the autoencoder, prints
``max|ours - ref| / max|ref|`` per output, and exits 0 only if every one is within the tolerance.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ldm.build import build_models
from ldm.config import load_config
from ldm.diffusion.guidance import Conditioning, guided_eps_fn
from ldm.diffusion.samplers import sample_ddim, sample_plms
from runtime.errors import UserError, run_cli

TOLERANCE = 1e-4


def dequantize(data, section: str) -> dict[str, torch.Tensor]:
    """``offset + scale * q`` in float32 for every parameter stored under ``section``."""
    prefix = f"{section}/q/"
    out = {}
    for key in data.files:
        if key.startswith(prefix):
            name = key[len(prefix):]
            q = np.asarray(data[key]).astype(np.float32)
            offset = np.float32(np.asarray(data[f"{section}/offset/{name}"]))
            scale = np.float32(np.asarray(data[f"{section}/scale/{name}"]))
            out[name] = torch.from_numpy(np.asarray(offset + scale * q, dtype=np.float32))
    return out


def one_hot(index: torch.Tensor, channels: int) -> torch.Tensor:
    """B x H x W class map -> B x channels x H x W float one-hot."""
    return torch.zeros(index.shape[0], channels, *index.shape[1:]).scatter_(1, index.unsqueeze(1), 1.0)


def relative_errors(prefix: Path, steps: int = 10, guidance: float = 3.0) -> dict[str, float]:
    """Run everything the fixture holds; return ``max abs error / max |reference|`` per output."""
    yaml_path, npz_path = prefix.with_suffix(".yaml"), prefix.with_suffix(".npz")
    if not npz_path.is_file():
        raise UserError(f"{npz_path} not found; pass the fixture prefix without extension")
    cfg = load_config(yaml_path)
    data = np.load(npz_path, allow_pickle=False)
    torch.manual_seed(0)
    models = build_models(cfg, parts=("model", "autoencoder", "diffusion"))
    unet = models.model.eval()
    unet.load_state_dict(dequantize(data, "model"), strict=True)
    buffers = {k[len("diffusion/"):]: torch.from_numpy(data[k]) for k in data.files if k.startswith("diffusion/")}
    if buffers:
        models.diffusion.load_state_dict(buffers, strict=True)

    t = lambda name: torch.from_numpy(np.asarray(data[name]))  # noqa: E731
    in_dim = int(cfg.model.params.grounding_tokenizer.params.in_dim)
    sem = one_hot(t("input/sem_index").long(), in_dim)
    gmask = t("input/grounding_mask").float()
    x, ts, ctx, uc, x_t = t("input/x"), t("input/timesteps").long(), t("input/context"), t("input/uc"), t("input/x_T")
    ours: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        tokens = unet.encode_grounding(sem, gmask)
        extra = unet.downsample_grounding(sem)
        ours["grounding_tokens"], ours["downsampled"] = tokens, extra
        ours["eps"] = unet(x, ts, ctx, tokens, extra)
        cond = Conditioning(ctx, tokens, extra)
        uncond = Conditioning(uc, unet.null_grounding(x.shape[0]), extra)
        eps_fn = guided_eps_fn(unet, cond, uncond, guidance)
        ac = models.diffusion.alphas_cumprod
        ours[f"plms{steps}_cfg{guidance:g}"] = sample_plms(eps_fn, x_t.clone(), ac, steps)
        ours[f"ddim{steps}_cfg{guidance:g}"] = sample_ddim(eps_fn, x_t.clone(), ac, steps)
        if models.autoencoder is not None and any(k.startswith("autoencoder/") for k in data.files):
            ae = models.autoencoder.eval()
            ae.load_state_dict(dequantize(data, "autoencoder"), strict=True)
            ours["ae_moments"] = ae.moments(t("input/image"))
            ours["ae_decoded"] = ae.decode(t("input/z"))
    errors = {}
    for name, value in ours.items():
        key = f"output/{name}"
        if key not in data.files:
            continue
        ref = t(key)
        if ref.shape != value.shape:
            raise UserError(f"{npz_path}: output {name} has shape {tuple(ref.shape)}, ours {tuple(value.shape)}")
        errors[name] = float((value - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prefix", type=Path, help="fixture path without extension (PREFIX.yaml + PREFIX.npz)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="max allowed relative error")
    args = parser.parse_args()
    prefix = args.prefix.with_suffix("") if args.prefix.suffix in (".npz", ".yaml") else args.prefix
    errors = relative_errors(prefix)
    ok = True
    for name, err in errors.items():
        status = "ok" if err <= args.tolerance else "FAIL"
        ok &= err <= args.tolerance
        print(f"{name:18s} max|err|/max|ref| = {err:.2e}  {status}")
    if not errors:
        raise UserError(f"{prefix}.npz holds no outputs to compare")
    print("all outputs within tolerance" if ok else f"some outputs exceed {args.tolerance:g}")
    return 0 if ok else 1


if __name__ == "__main__":
    run_cli(main)
