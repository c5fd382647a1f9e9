#!/usr/bin/env python
"""Load a checkpoint strictly into the architecture its config describes, and say what is in it.

    python tools/check_checkpoint.py model_sem/sem_diffusion_pytorch_model.bin
    python tools/check_checkpoint.py OUTPUT/exp/checkpoints/latest.safetensors --config configs/demo.yaml

Prints one line per part (tensors, parameters, dtype); exits 0 when every tensor fits, 1 naming the
first 10 missing / unexpected / mis-shaped tensors otherwise, 2 for unreadable input.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ldm.build import build_models
from ldm.checkpoint import CheckpointError, fit_sections, read_checkpoint
from ldm.config import PARTS, load_config
from runtime.errors import run_cli


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt", type=Path, help="checkpoint: GLIGEN .bin/.pth, SD-1.x .ckpt or our .safetensors")
    parser.add_argument("--config", type=Path, help="YAML to build the models from (default: the checkpoint's own)")
    parser.add_argument("--allow_unsafe_pickle", action="store_true",
                        help="load pickles that need arbitrary classes (only for files you trust)")
    args = parser.parse_args()
    ckpt = read_checkpoint(args.ckpt, args.allow_unsafe_pickle, unsafe_flag="--allow_unsafe_pickle")
    cfg = load_config(args.config) if args.config else ckpt.config
    if cfg is None:
        print(f"error: {args.ckpt} carries no config; pass --config", file=sys.stderr)
        return 2
    parts = [p for p in PARTS if p in ("model", "diffusion") or p in ckpt.sections]
    models = build_models(cfg, parts=parts, device="meta")
    try:
        fitted = fit_sections(models, ckpt)
    except CheckpointError as exc:
        print(f"MISMATCH: {exc}")
        return 1
    print(f"{args.ckpt}: {ckpt.kind} checkpoint, config from {'--config' if args.config else 'the file'}")
    for part, state in fitted.items():
        n = sum(v.numel() for v in state.values())
        dtypes = sorted({str(v.dtype).replace('torch.', '') for v in state.values()})
        print(f"  {part:13s} {len(state):5d} tensors  {n / 1e6:10.2f} M values  {'/'.join(dtypes)}  ok")
    skipped = sorted(set(ckpt.sections) - set(fitted))
    if skipped:
        print(f"  (not checked, no such part in the config: {', '.join(skipped)})")
    if ckpt.training_state:
        print(f"  training state: {', '.join(sorted(ckpt.training_state))}")
    return 0


if __name__ == "__main__":
    run_cli(main)
