"""Train the class-conditional mask DDPM on ground-truth defect masks.

    python -m maskgen.train --data_root DATA/SD-saliency-900 --out OUTPUT/maskgen

``OUT`` is a run folder in the format of every trainer here (:mod:`training.run_folder`): weights in
``checkpoints/ckpt_<step>.safetensors`` (sections ``model`` and ``ema``; config and categories in the metadata),
the training state in ``checkpoints/state_<step>.json`` + ``.safetensors``, the pointer ``latest.json``, one
``metrics.jsonl`` line per epoch and ``config.yaml``. Runs resume automatically from ``latest.json`` (exactly,
mid-epoch included; a legacy ``checkpoints/last.pt`` is read weights-only and continued in this
format). Checkpoints are written atomically at every ``ckpt_every_epochs``, at the end, when ``--max_minutes``
is reached and on Ctrl-C; the newest one is kept.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from tqdm.auto import tqdm

from dataset.categories import categories_from_config
from runtime.atomic import write_text_atomic
from runtime.cli import add_device, add_threads, positive_float
from runtime.device import pick_device
from runtime.errors import UserError, run_cli
from runtime.lock import locked
from runtime.options import add_set_argument
from runtime.safe_load import first_line
from runtime.seeds import generator
from training.ema import EMA
from training.jsonl_log import JsonlLog
from training.lr_schedule import lr_factor
from training.resume_rule import changed_settings, refuse_changes

from .checkpoint import RUN_FIX, resume_point, run_folder
from .checkpoint import save as save_checkpoint
from .config import check_config, load_config
from .data import training_data
from .model import MaskDiffusion, build_model, categories_to_list

OUT_FIX = "choose another --out"
def _augment(x: torch.Tensor, cfg: Mapping[str, Any], gen: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    flips_h = torch.rand(b, generator=gen) < 0.5
    flips_v = torch.rand(b, generator=gen) < 0.5
    if cfg["data"]["hflip"] and flips_h.any():
        x = torch.where(flips_h.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
    if cfg["data"]["vflip"] and flips_v.any():
        x = torch.where(flips_v.view(-1, 1, 1, 1).to(x.device), x.flip(-2), x)
    return x


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=generator(seed, 1, epoch))


def _lr_at(step: int, cfg: Mapping[str, Any]) -> float:
    return float(cfg["train"]["lr"]) * lr_factor(step, int(cfg["train"]["warmup_steps"]), warmup_from_zero=False)


def train(cfg: dict[str, Any], data_root: str | Path, out: str | Path, device: str = "cpu",
          max_minutes: Optional[float] = None, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) into ``out`` under its folder lock; returns a summary (epochs, steps, minutes, losses)."""
    check_config(cfg)
    with locked(out, OUT_FIX):  # one writer per run folder
        return _train(cfg, data_root, Path(out), device, max_minutes, progress)


def _frozen(key: str) -> bool:
    """Config entries a resumed run must share with its checkpoint."""
    return key.split(".")[0] in ("model", "diffusion", "categories") or key in ("data.image_size", "data.binarize")


def _train(cfg: dict[str, Any], data_root: str | Path, out: Path, device: str, max_minutes: Optional[float],
           progress: bool) -> dict[str, Any]:
    cats = categories_from_config(cfg["categories"])
    cfg["categories"] = categories_to_list(cats)
    size = int(cfg["data"]["image_size"])
    x_all, y_all, mask_set = training_data(data_root, cats, size, cfg["data"]["binarize"])

    tcfg = cfg["train"]
    torch.manual_seed(int(tcfg["seed"]))
    model: MaskDiffusion = build_model(cfg, len(cats)).to(device)
    ema = EMA(model.named_parameters(), tcfg["ema_decay"], warmup=True)
    opt = torch.optim.AdamW(model.parameters(), lr=float(tcfg["lr"]), weight_decay=float(tcfg["weight_decay"]))
    gen = generator(tcfg["seed"], 2)
    epoch, batch_done, step, elapsed_before = 0, 0, 0, 0.0
    history: list[dict[str, Any]] = []

    run_folder(out).remove_stray_temporaries()
    point = resume_point(out)
    if point is not None:
        refuse_changes(out, changed_settings(point.config, cfg, _frozen), "use a new --out or the same config")
        try:
            model.load_state_dict(point.model)
            ema.load_state_dict(point.ema)
            opt.load_state_dict(point.state["opt"])
            gen.set_state(point.state["rng"])
            epoch, batch_done, step = int(point.state["epoch"]), int(point.state["batch"]), int(point.state["step"])
            elapsed_before = float(point.state.get("elapsed_s", 0.0))
            history = list(point.state.get("history", []))
        except Exception as exc:  # a damaged or foreign training state fails in many ways
            raise UserError(f"{point.source}: cannot resume from it ({type(exc).__name__}: {first_line(exc)}); "
                            f"{RUN_FIX}") from None
        print(f"resuming {point.source}: epoch {epoch + 1}, batch {batch_done}, step {step}", file=sys.stderr)

    n = x_all.shape[0]
    bs = int(tcfg["batch_size"])
    per_epoch = math.ceil(n / bs)
    epochs = int(tcfg["epochs"])
    n_params = sum(p.numel() for p in model.parameters())
    counts = ", ".join(f"{k} {v}" for k, v in mask_set.counts().items())
    print(f"maskgen: {n} masks ({counts}) at {size}x{size}; UNet {n_params / 1e6:.2f}M parameters; "
          f"{epochs} epochs x {per_epoch} steps of batch {bs} on {device}", file=sys.stderr)
    write_text_atomic(_yaml(cfg), out / "config.yaml")
    log = JsonlLog(out)
    log.replace([(h["step"], h) for h in history])  # the log up to the checkpoint resumed from

    t_start = time.monotonic()
    saved_at = (epoch, batch_done, step) if point is not None else None
    last: Optional[Path] = Path(point.source) if point is not None else None

    def elapsed() -> float:
        return elapsed_before + time.monotonic() - t_start

    def save() -> None:
        nonlocal saved_at, last
        if saved_at == (epoch, batch_done, step) and last is not None and last.suffix == ".safetensors":
            return
        last = save_checkpoint(out, cfg, model, ema.module_state_dict(model),
                               {"opt": opt.state_dict(), "rng": gen.get_state(), "epoch": epoch, "batch": batch_done,
                                "step": step, "elapsed_s": elapsed(), "history": history}, n_params)
        saved_at = (epoch, batch_done, step)

    stop_reason = "done"
    limit_s = None if max_minutes is None else 60.0 * float(max_minutes) - (time.monotonic() - t_start)
    session_start = time.monotonic()
    model.train()
    try:
        while epoch < epochs:
            order = _epoch_order(n, int(tcfg["seed"]), epoch)
            losses: list[float] = []
            bar = tqdm(range(batch_done, per_epoch), desc=f"epoch {epoch + 1}/{epochs}", leave=False,
                       disable=not progress, dynamic_ncols=True, mininterval=1.0 if sys.stderr.isatty() else 30.0)
            for b in bar:
                idx = order[b * bs:(b + 1) * bs]
                x0 = _augment(x_all[idx], cfg, gen).to(device)
                y = y_all[idx].to(device)
                for group in opt.param_groups:
                    group["lr"] = _lr_at(step, cfg)
                loss = model.loss(x0, y, float(tcfg["p_uncond"]), gen, tcfg["min_snr_gamma"])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if tcfg["grad_clip"]:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), float(tcfg["grad_clip"]))
                opt.step()
                step += 1
                ema.update(step)
                batch_done = b + 1
                losses.append(loss.item())
                bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.4f}", refresh=False)
                if limit_s is not None and time.monotonic() - session_start > limit_s:
                    stop_reason = "time limit"
                    break
            bar.close()
            if losses:
                mean = sum(losses) / len(losses)
                history.append({"epoch": epoch + 1, "step": step, "loss": mean, "minutes": elapsed() / 60})
                log.append(step, history[-1])
                print(f"epoch {epoch + 1}/{epochs}: loss {mean:.4f} (step {step}, "
                      f"{elapsed() / 60:.1f} min)", file=sys.stderr)
            if stop_reason != "done":
                break
            epoch, batch_done = epoch + 1, 0
            if epoch % int(tcfg["ckpt_every_epochs"]) == 0 and epoch < epochs:
                save()
    except KeyboardInterrupt:
        save()
        print(f"interrupted: saved {last} (epoch {epoch + 1}, batch {batch_done}); run again to resume",
              file=sys.stderr)
        raise
    save()
    if stop_reason != "done":
        print(f"stopped at the time limit: saved {last} (epoch {epoch + 1}, batch {batch_done}); "
              "run again to resume", file=sys.stderr)
    return {"epochs_done": epoch, "step": step, "minutes": elapsed() / 60, "history": history,
            "stopped": stop_reason, "checkpoint": str(last)}


def _yaml(cfg: Mapping[str, Any]) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(dict(cfg)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m maskgen.train",
        description="Train the class-conditional mask DDPM (DefFiller §4.4.1) on ground-truth defect "
                    "masks. Resumes automatically from OUT/latest.json.",
        epilog="example: python -m maskgen.train --config configs/maskgen_cpu.yaml "
               "--data_root DATA/SD-saliency-900 --out OUTPUT/maskgen --max_minutes 30")
    p.add_argument("--data_root", required=True,
                   help="folder of mask PNGs, or a dataset root with 'Ground truth'/'Ground_truth'; "
                        "the category is the filename prefix (In_*, Pa_*, Sc_*)")
    p.add_argument("--out", required=True, help="run folder (checkpoints/, latest.json, metrics.jsonl, config.yaml)")
    p.add_argument("--config", default=None,
                   help="YAML config over the built-in defaults (the paper's settings, maskgen/config.py), "
                        "e.g. configs/maskgen_cpu.yaml (default: none)")
    p.add_argument("--epochs", type=int, help="override train.epochs (raise it to extend a finished run)")
    p.add_argument("--batch_size", type=int, help="override train.batch_size")
    p.add_argument("--lr", type=float, help="override train.lr")
    p.add_argument("--seed", type=int, help="override train.seed")
    add_set_argument(p, "model.base_channels=32 train.ema_decay=0.995")
    p.add_argument("--max_minutes", type=positive_float,
                   help="stop (and checkpoint) after this many minutes of this session; rerun to resume")
    add_device(p)
    add_threads(p, None, "torch's choice")
    p.add_argument("--no_progress", action="store_true", help="no tqdm bars (epoch lines are still printed)")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = list(args.set)
    for key, val in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr),
                     ("seed", args.seed)):
        if val is not None:
            overrides.append(f"train.{key}={val}")
    cfg = load_config(args.config, overrides)
    device = str(pick_device(args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    summary = train(cfg, args.data_root, args.out, device=device, max_minutes=args.max_minutes,
                    progress=not args.no_progress)
    last = summary["history"][-1]["loss"] if summary["history"] else float("nan")
    print(f"maskgen.train: {summary['epochs_done']} epochs, {summary['step']} steps, "
          f"{summary['minutes']:.1f} min, last epoch loss {last:.4f} -> {summary['checkpoint']}")
    return 0


if __name__ == "__main__":
    run_cli(main)
