"""Train the saliency detector on paired images/masks.

    python -m evaluation.detector.train --data_root PATH/SD-saliency-900 --out OUTPUT/detector \
        [--config configs/eval/detector.yaml] [--split DATA/splits/x.json | --ratio 9:1 --seed 0] \
        [--set train.epochs=5 ...]

``OUT`` is a run folder in the format of every trainer here (:mod:`training.run_folder`): ``config.yaml`` at
the start; after every epoch a checkpoint (``checkpoints/ckpt_<step>.safetensors`` with the weights and config,
``checkpoints/state_<step>.json`` + ``.safetensors`` with the optimiser, schedule, history and best validation
weights, the pointer ``latest.json``) and a ``metrics.jsonl`` line; at the end ``detector.safetensors`` (weights,
config and the run summary: steps, warm-up steps, selected epoch, ..., for prediction). A rerun with the same OUT
continues from ``latest.json`` (a legacy ``last.pt`` is read weights-only and continued in this
format). All writes are atomic; the newest checkpoint is kept.

With ``train.val_fraction > 0`` a validation share of the training pairs is held out
(:mod:`.validation`), scored every ``train.val_every`` epochs and after the last one (history entries
``val_S``, ``val_MAE``, ...); with ``train.keep_best`` detector.safetensors holds the weights of the epoch with the
best validation S instead of the last epoch's.

With ``train.min_steps`` the run takes exactly ``max(min_steps, epochs x steps per epoch)`` optimiser steps and
warms up for ``warmup_epochs / epochs x min_steps`` steps, whatever the data size, so settings of a protocol
trained under one ``min_steps`` take the same steps and warm-up. With ``train.real_share`` and a training set
of real then generated pairs (``n_real``), every batch keeps the real pairs at that share
(:class:`.data.RealShareBatches`).
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm import tqdm

from dataset.splits import parse_ratio
from runtime.atomic import write_text_atomic
from runtime.cli import add_device, non_negative_int
from runtime.configs import EVAL_CONFIG_DIR, load_config, to_plain
from runtime.device import pick_device
from runtime.errors import UserError, run_cli
from runtime.lock import locked
from runtime.options import add_set_argument
from runtime.safe_load import first_line
from training.jsonl_log import JsonlLog
from training.lr_schedule import WarmupSchedule
from training.resume_rule import changed_settings, refuse_changes

from .checks import check_detector_config
from .data import RealShareBatches, SaliencyPairs
from .model import build_model
from .runs import RUN_FIX, clear_run, resume_point, run_folder, save_checkpoint, save_final
from .validation import ValidationSet, carve_pairs

DEFAULT_CONFIG = EVAL_CONFIG_DIR / "detector.yaml"
OUT_FIX = "choose another --out"


def deep_supervision_loss(outputs: Sequence[torch.Tensor], target: torch.Tensor, bce_weight: float = 1.0,
                          iou_weight: float = 1.0, side_weight: float = 0.0) -> torch.Tensor:
    """:func:`saliency_loss` of the prediction ``outputs[0]`` plus ``side_weight`` times that of each side output."""
    loss = saliency_loss(outputs[0], target, bce_weight, iou_weight)
    if side_weight:
        for side in outputs[1:]:
            loss = loss + side_weight * saliency_loss(side, target, bce_weight, iou_weight)
    return loss


def saliency_loss(logits: torch.Tensor, target: torch.Tensor, bce_weight: float = 1.0,
                  iou_weight: float = 1.0) -> torch.Tensor:
    """Pixel BCE plus a soft-IoU term per image (the usual hybrid loss for saliency)."""
    loss = bce_weight * F.binary_cross_entropy_with_logits(logits, target)
    if iou_weight:
        prob = torch.sigmoid(logits)
        inter = (prob * target).sum(dim=(1, 2, 3))
        union = (prob + target - prob * target).sum(dim=(1, 2, 3))
        loss = loss + iou_weight * (1.0 - (inter + 1.0) / (union + 1.0)).mean()
    return loss


# what a resumed run may change: how long it trains and where; everything else is what the run is
RESUMABLE = ("train.epochs", "train.min_steps", "train.max_minutes", "train.num_threads", "train.device",
             "train.val_every", "predict.batch_size")


def _guarded(key: str) -> bool:
    """Settings a resumed run keeps: all but :data:`RESUMABLE` (its model, data and training settings)."""
    return key not in RESUMABLE


def train_detector(cfg: DictConfig, train_pairs: Sequence, out_dir: str | Path, resume: bool = False,
                   log: Callable[[str], None] = print, progress: bool = True, n_real: int | None = None) -> Path:
    """Train on ``train_pairs`` under ``out_dir``'s folder lock and return the path of ``detector.safetensors``
    (``resume``: continue the run in ``out_dir``; otherwise a previous run there is replaced).

    ``n_real``: the first ``n_real`` pairs are real and the rest generated (used by ``train.real_share``)."""
    check_detector_config(cfg)
    if not train_pairs:
        raise UserError("no training pairs; check the dataset folder and the split")
    with locked(out_dir, OUT_FIX):  # one writer per run folder
        return _train_detector(cfg, train_pairs, Path(out_dir), resume, log, progress, n_real)


def schedule_steps(t: Any, steps_per_epoch: int) -> tuple[int, int, int]:
    """``(epochs, total steps, warm-up steps)`` of a run with ``steps_per_epoch`` (see the module docstring)."""
    epochs = int(t.epochs)
    total, warmup = epochs * steps_per_epoch, int(float(t.warmup_epochs) * steps_per_epoch)
    min_steps = int(t.get("min_steps") or 0)
    if min_steps:
        total = max(total, min_steps)
        epochs = math.ceil(total / steps_per_epoch)
        warmup = round(float(t.warmup_epochs) / int(t.epochs) * min_steps)
    return epochs, total, min(warmup, total)


def _loader(data: SaliencyPairs, t: Any, n_real: int | None, log: Callable[[str], None]) -> DataLoader:
    """Shuffled batches of ``train.batch_size``, or :class:`.RealShareBatches` under ``train.real_share``."""
    share = t.get("real_share")
    if share is not None and n_real and 0 < n_real < len(data):
        sampler = RealShareBatches(n_real, len(data), int(t.batch_size), float(share), int(t.seed))
        log(f"train.real_share={float(share):g}: batches of {sampler.real_per_batch} real + "
            f"{sampler.gen_per_batch} generated pairs, {len(sampler)} per epoch (one pass over the real pairs)")
        return DataLoader(data, batch_sampler=sampler)
    if share is not None:
        log(f"train.real_share={float(share):g} ignored: the training set is not real and generated pairs")
    bs = min(int(t.batch_size), len(data))
    return DataLoader(data, batch_size=bs, shuffle=True, drop_last=len(data) > bs,
                      generator=torch.Generator().manual_seed(int(t.seed)))


def batch_size(loader: DataLoader) -> int:
    """Pairs per batch of :func:`_loader`'s loader."""
    sampler = loader.batch_sampler
    if isinstance(sampler, RealShareBatches):
        return sampler.real_per_batch + sampler.gen_per_batch
    return int(loader.batch_size)


def _train_detector(cfg: DictConfig, train_pairs: Sequence, out_dir: Path, resume: bool,
                    log: Callable[[str], None], progress: bool, n_real: int | None = None) -> Path:
    t = cfg.train
    torch.manual_seed(int(t.seed))
    np.random.seed(int(t.seed))
    if t.get("num_threads"):
        torch.set_num_threads(int(t.num_threads))
    device = pick_device(t.get("device"))
    size = int(cfg.data.image_size)
    in_chans = int(cfg.model.get("in_chans", 3))

    t0 = time.time()
    val_set = None
    if float(t.get("val_fraction") or 0) > 0:
        real_ids = {id(p) for p in train_pairs[:n_real or 0]}
        train_pairs, val_pairs = carve_pairs(train_pairs, float(t.val_fraction), int(t.get("val_seed") or 0))
        if n_real:  # real pairs first again
            train_pairs = sorted(train_pairs, key=lambda p: id(p) not in real_ids)
            n_real = sum(id(p) in real_ids for p in train_pairs)
        val_set = ValidationSet(val_pairs, size, in_chans)
        log(f"validation: {len(val_set)} of the training pairs held out (val_fraction {float(t.val_fraction):g}, "
            f"val_seed {int(t.get('val_seed') or 0)})")
    data = SaliencyPairs(train_pairs, size, augment=bool(t.augment), in_chans=in_chans, seed=int(t.seed))
    loader = _loader(data, t, n_real, log)
    log(f"data: {len(data)} training pairs at {size}x{size} (loaded in {time.time() - t0:.1f}s)")

    model = build_model(cfg.model).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=float(t.lr), weight_decay=float(t.weight_decay))
    steps_per_epoch = len(loader)
    epochs, total_steps, warmup_steps = schedule_steps(t, steps_per_epoch)
    if t.get("min_steps"):
        log(f"train.min_steps={int(t.min_steps)}: {total_steps} steps in {epochs} epochs of {steps_per_epoch}, "
            f"{warmup_steps} warm-up steps")
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, WarmupSchedule("cosine", warmup_steps, total_steps, warmup_from_zero=False))
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    arch = cfg.model.get("arch", "unet")
    log(f"model: {'MSINet' if arch == 'msinet' else f'{cfg.model.encoder} U-Net'}, {n_params:.3f}M parameters, "
        f"device {device}")
    keep_best = bool(t.get("keep_best"))
    best: dict | None = None  # {"epoch", "S", "model"}: the best validation epoch so far (keep_best)

    history: list[dict] = []
    start_epoch = 0
    if not resume:
        clear_run(out_dir)
    point = resume_point(out_dir) if resume else None
    if point is not None:
        if point.config is not None:
            refuse_changes(out_dir, changed_settings(point.config, to_plain(cfg), _guarded),
                           "rerun with the run's settings, or use a new --out (or move the run folder away) to train "
                           "from scratch")
        try:
            model.load_state_dict(point.model)
            opt.load_state_dict(point.state["optimizer"])
            sched.load_state_dict(point.state["scheduler"])
            history = list(point.state.get("history", []))
            start_epoch = int(point.state["epoch"])
            best = point.state.get("best")
        except Exception as exc:  # another model, another optimiser or a foreign file: many types
            raise UserError(f"{point.source}: cannot resume from it ({type(exc).__name__}: {first_line(exc)}); it "
                            "was written with another model config or is not a detector.train checkpoint; "
                            f"{RUN_FIX}") from None
        log(f"resume: {point.source} at epoch {start_epoch}")
    elif resume:
        log(f"resume: no checkpoint in {out_dir} yet, starting from scratch")
    run_folder(out_dir).remove_stray_temporaries()
    write_text_atomic(OmegaConf.to_yaml(cfg), out_dir / "config.yaml")
    metrics = JsonlLog(out_dir)
    metrics.replace([(min((h["epoch"]) * steps_per_epoch, total_steps), h) for h in history])

    plain_cfg = to_plain(cfg)
    max_minutes = t.get("max_minutes")
    train_t0 = time.time() - sum(h["seconds"] + h.get("val_seconds", 0.0) for h in history)
    for epoch in range(start_epoch, epochs):
        model.train()
        e0, losses = time.time(), []
        if isinstance(loader.batch_sampler, RealShareBatches):
            loader.batch_sampler.set_epoch(epoch)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not progress,
                   dynamic_ncols=True)
        for x, y in bar:
            x, y = x.to(device), y.to(device)
            loss = deep_supervision_loss(model.forward_all(x), y, float(t.bce_weight), float(t.iou_weight),
                                         float(t.get("side_weight") or 0))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
            if sched.last_epoch >= total_steps:  # min_steps: the last epoch may end early
                break
        bar.close()
        entry = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": time.time() - e0}
        stop = bool(max_minutes and (time.time() - train_t0) / 60 >= float(max_minutes) and epoch + 1 < epochs)
        note = ""
        if val_set is not None and ((epoch + 1) % int(t.get("val_every") or 1) == 0 or epoch + 1 == epochs or stop):
            v0 = time.time()
            scores = val_set.score(model, device, int(cfg.get("predict", {}).get("batch_size") or 32))
            entry.update({f"val_{k}": v for k, v in scores.items()}, val_seconds=time.time() - v0)
            note = ", val " + " ".join(f"{k} {v:.3f}" for k, v in scores.items())
            if keep_best and (best is None or scores["S"] > best["S"]):
                best = {"epoch": epoch + 1, "S": scores["S"],
                        "model": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        history.append(entry)
        metrics.append(sched.last_epoch, entry)
        log(f"epoch {epoch + 1}/{epochs}: loss {entry['loss']:.4f}{note}, "
            f"{entry['seconds']:.0f}s (total {(time.time() - train_t0) / 60:.1f} min)")
        save_checkpoint(out_dir, int(sched.last_epoch), model.state_dict(), plain_cfg,
                        {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch + 1,
                         "history": history, "best": best})
        if stop:
            log(f"stopping after epoch {epoch + 1}: train.max_minutes={max_minutes} reached")
            break
    selected = best["epoch"] if best is not None else (history[-1]["epoch"] if history else 0)
    if best is not None:
        log(f"keep_best: weights of epoch {best['epoch']} (validation S {best['S']:.4f})")
    minutes = (time.time() - train_t0) / 60
    extra = {"n_val": len(val_set), "val_stems": val_set.stems} if val_set is not None else {}
    summary = {"epochs": len(history), "selected_epoch": selected, "minutes": minutes, "steps": int(sched.last_epoch),
               "warmup_steps": warmup_steps, "real_share": t.get("real_share"), "batch_size": batch_size(loader),
               "n_train": len(data), **extra, "image_size": size}
    final = save_final(out_dir, best["model"] if best is not None else model.state_dict(), plain_cfg,
                       {"epochs": selected, "n_train": len(data), "summary": summary})
    log(f"saved {final} ({minutes:.1f} min of training)")
    return final


def train_ratio(text: str) -> str:
    """``--ratio``: a train:test ratio with a training share; ``N:0`` trains on every pair (no test side)."""
    try:
        fraction = parse_ratio(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if fraction >= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} leaves no training pairs; give training a share, e.g. 9:1 "
                                         "(1:0 trains on every pair)")
    return text


def add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data_root", required=True,
                        help="paired dataset folder (Source Images|Source_Images + Ground truth|Ground_truth)")
    parser.add_argument("--split", default=None,
                        help="split JSON (dataset.splits); made from --ratio/--seed when it does not exist "
                             "(default DATA/splits/<folder>_<ratio>_seed<seed>.json)")
    parser.add_argument("--ratio", type=train_ratio, default="9:1",
                        help="train:test ratio for a new split; N:0 trains on every pair (default 9:1)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="split seed (default 0)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.detector.train",
        description="Train the saliency detector (MSINet, or a U-Net on a timm encoder) on a split's "
                    "training pairs.")
    add_data_args(parser)
    parser.add_argument("--out", required=True,
                        help="run folder (checkpoints/, latest.json, metrics.jsonl, detector.safetensors)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="detector YAML (default %(default)s)")
    add_set_argument(parser, "train.epochs=5 data.image_size=160")
    add_device(parser, None, "the config's train.device, auto")
    parser.add_argument("--resume", action="store_true",
                        help="accepted for compatibility: a run always continues from OUT/latest.json when it exists, "
                             "as main.py and maskgen.train do")
    parser.add_argument("--no_progress", action="store_true", help="no tqdm bars")
    args = parser.parse_args(argv)
    if args.device is not None:
        args.set = [*args.set, f"train.device={args.device}"]
    from dataset.splits import split_pairs

    cfg = load_config(args.config, DEFAULT_CONFIG, args.set)
    check_detector_config(cfg, "--config / --set")  # before the data is read
    train_pairs, _, _ = split_pairs(args.data_root, args.split, args.ratio, args.seed)
    train_detector(cfg, train_pairs, args.out, resume=True, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    run_cli(main)
