"""Train the mask-guided upscaler (``ldm.modules.mask_upscaler``) on real pairs sent through a generator's round trip.

    python -m training.upscaler --data_root ../shared/data/SD-saliency-900 \\
        --split DATA/splits/SD-saliency-900_9-1_seed0.json --side 64 --out OUTPUT/upscaler64.safetensors

Each training image is resized to ``--side`` exactly as the generator's training data is (centre crop,
bicubic), resized back to its stored size (bicubic, as ``infer.py --output_size``), and the network learns
to give back the stored image from that and the stored mask (L1 on random crops, most of them on the
defect). Only the split's ``train`` pairs are read. It takes a few minutes on one CPU core and writes its one file
at the end, atomically (a stop loses the run, never a half-written file; the output folder is checked for writing
before training starts). The file is attached to a generator with ``infer.py --upscaler FILE`` or embedded in a
release with ``python -m inference.export --upscaler FILE``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dataset.io import read_image, read_mask
from dataset.pairs import find_pairs
from dataset.sem_dataset import center_crop_square, prepare_sample
from dataset.splits import load_split, subset_pairs
from ldm.checkpoint import save_checkpoint
from ldm.modules.mask_upscaler import MaskUpscaler, resize_images
from runtime.atomic import check_writable
from runtime.cli import add_threads, image_side, int_in
from runtime.digest import file_sha256
from runtime.errors import UserError, run_cli

TARGET = "ldm.modules.mask_upscaler.MaskUpscaler"


def round_trip_pairs(data_root: str | Path, stems: list[str], side: int) -> tuple[torch.Tensor, ...]:
    """(bicubic round trip, stored mask, stored image) as N x 1 x S x S tensors in [0, 1] for ``stems``."""
    pairs = subset_pairs(find_pairs(data_root), stems)
    inputs, masks, targets = [], [], []
    size = None
    for pair in pairs:
        image = read_image(pair.image)
        mask = read_mask(pair.mask)
        stored = min(center_crop_square(image).size)
        if size is None:
            size = stored
        elif stored != size:
            raise UserError(f"{pair.image}: {stored} px after the centre crop, the others {size} px; "
                            "the upscaler learns one stored size, so resize the dataset to one size first")
        small, _ = prepare_sample(image, mask, side, flip=False)
        full, full_mask = prepare_sample(image, mask, size, flip=False)
        inputs.append(resize_images((small.mean(0, keepdim=True)[None] + 1) / 2, size)[0])
        targets.append((full.mean(0, keepdim=True) + 1) / 2)
        masks.append(full_mask.float()[None])
    if size is None or size <= side:
        raise UserError(f"{data_root}: the images are {size} px, not above --side {side}; nothing to upscale")
    return torch.stack(inputs), torch.stack(masks), torch.stack(targets)


def defect_crops(masks: torch.Tensor, batch: int, crop: int, on_defect: float,
                 rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """``batch`` (image, top, left) crops; a share ``on_defect`` of them centred on a random mask pixel."""
    n, size = masks.shape[0], masks.shape[-1]
    out = []
    for i in rng.integers(0, n, batch).tolist():
        ys, xs = torch.nonzero(masks[i, 0] > 0.5, as_tuple=True)
        if len(ys) and rng.random() < on_defect:
            k = int(rng.integers(len(ys)))
            cy, cx = int(ys[k]), int(xs[k])
        else:
            cy, cx = (int(v) for v in rng.integers(0, size, 2))
        top = min(max(cy - crop // 2, 0), size - crop)
        left = min(max(cx - crop // 2, 0), size - crop)
        out.append((i, top, left))
    return out


def train_upscaler(inputs: torch.Tensor, masks: torch.Tensor, targets: torch.Tensor, side: int, iters: int = 1500,
                   batch_size: int = 16, crop: int = 64, lr: float = 1e-3, width: int = 32, depth: int = 5,
                   seed: int = 0, on_defect: float = 0.7, progress: bool = True) -> tuple[MaskUpscaler, float]:
    """Fit a :class:`MaskUpscaler` to the round-trip pairs; returns it (eval mode) and the mean loss of the last
    tenth of the iterations."""
    size = inputs.shape[-1]
    crop = min(crop, size)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = MaskUpscaler(side=side, size=size, width=width, depth=depth)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    tail: list[float] = []
    bar = tqdm(range(iters), desc="upscaler", disable=not progress)
    for it in bar:
        picks = defect_crops(masks, batch_size, crop, on_defect, rng)
        cut = [(slice(None), slice(t, t + crop), slice(left, left + crop)) for _, t, left in picks]
        x = torch.stack([inputs[i][c] for (i, _, _), c in zip(picks, cut)])
        m = torch.stack([masks[i][c] for (i, _, _), c in zip(picks, cut)])
        y = torch.stack([targets[i][c] for (i, _, _), c in zip(picks, cut)])
        if rng.random() < 0.5:
            x, m, y = x.flip(-1), m.flip(-1), y.flip(-1)
        if rng.random() < 0.5:
            x, m, y = x.transpose(-1, -2), m.transpose(-1, -2), y.transpose(-1, -2)
        loss = F.l1_loss(net(x, m[:, 0]), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if it >= iters - max(1, iters // 10):
            tail.append(loss.item())
        if it % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return net.eval(), float(np.mean(tail))


def save_upscaler(net: MaskUpscaler, out: str | Path, metadata: dict) -> Path:
    """The upscaler as a ``.safetensors`` with its config (section ``upscaler``), atomically."""
    params = {"side": net.side, "size": net.size, "width": net.net[0].out_channels,
              "depth": sum(isinstance(m, torch.nn.Conv2d) for m in net.net)}
    return save_checkpoint(out, {"upscaler": net.state_dict()}, {"upscaler": {"target": TARGET, "params": params}},
                           metadata, sidecar=False)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.upscaler", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_root", required=True, help="paired folder of real images and masks")
    p.add_argument("--split", required=True, help="split JSON; its train pairs are used (never its test pairs)")
    p.add_argument("--side", type=image_side, required=True, help="the generator's image side in pixels (e.g. 64)")
    p.add_argument("--out", required=True, help="file to write (.safetensors)")
    p.add_argument("--iters", type=int_in(1, 10**6), default=1500, help="iterations (default: %(default)s)")
    p.add_argument("--batch_size", type=int_in(1, 4096), default=16, help="crops per iteration (default: %(default)s)")
    p.add_argument("--crop", type=int_in(8, 4096), default=64,
                   help="crop side at the stored size (default: %(default)s)")
    p.add_argument("--width", type=int_in(1, 1024), default=32, help="channels (default: %(default)s)")
    p.add_argument("--depth", type=int_in(2, 64), default=5, help="convolutions (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops and the initialisation (default: 0)")
    add_threads(p, 1)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UserError(f"--out {out}: the upscaler file must end in .safetensors")
    if not (args.lr > 0 and np.isfinite(args.lr)):
        raise UserError(f"--lr must be a positive number, got {args.lr}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    split = load_split(args.split)
    if not split["train"]:
        raise UserError(f"{args.split}: the split has no train pairs to learn from; use a split with training pairs")
    check_writable(out)  # before minutes of training, not after
    start = time.time()
    inputs, masks, targets = round_trip_pairs(args.data_root, list(split["train"]), args.side)
    print(f"{len(inputs)} training pairs of {args.split}, {args.side} px -> {inputs.shape[-1]} px")
    net, loss = train_upscaler(inputs, masks, targets, args.side, args.iters, args.batch_size, args.crop, args.lr,
                               args.width, args.depth, args.seed)
    meta = {"data_root": str(args.data_root), "split": str(args.split), "split_sha256": file_sha256(args.split),
            "pairs": str(len(inputs)), "iters": str(args.iters), "seed": str(args.seed), "final_l1": f"{loss:.5f}"}
    save_upscaler(net, out, meta)
    print(f"wrote {out} (L1 {loss:.4f} over the last tenth, {time.time() - start:.0f} s); try it with "
          f"python -m evaluation.resolution_ceiling --upscaler {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
