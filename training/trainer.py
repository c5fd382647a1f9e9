"""DefFiller fine-tuning (GLIGEN-sem on SD-1.x), read top to bottom:

  run folder -> dataset -> models (initial weights, what trains) -> optimiser / schedule / EMA
  -> resume -> loop [batch -> conditioning -> noise -> UNet -> MSE on eps -> step] -> logs, grids,
  checkpoints.

What trains (``train.trainable``):
  * ``grounding`` (default, the paper): the gated self-attention layers (``*.fuser.*``), the mask
    encoder (``position_net``), the downsampler (``downsample_net``) and, when the model has a
    downsampler (its first conv is widened for the extra channels), the first conv's weight. Every
    other UNet parameter, the autoencoder and the text encoder are frozen: ``requires_grad=False``
    and eval mode.
  * ``all``: the whole UNet (autoencoder and text encoder stay frozen), for from-scratch tiny models
    such as ``configs/demo.yaml`` whose UNet body has no pretrained weights.

Randomness is explicit: each iteration draws its timesteps, noise and null-grounding choices from a
generator seeded by (seed, iteration, rank), and each sample's augmentation from a seed fixed by its
position in the data stream (``training/data.py``). A resumed run therefore ends with the same
weights as an uninterrupted one.
"""
from __future__ import annotations

import errno
import math
import random
import signal
import sys
import time
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

from ldm.build import DefFillerModels, build_models
from ldm.checkpoint import check_diffusion, load_into, model_sections, read_checkpoint
from ldm.config import PARTS
from ldm.diffusion.schedule import min_snr_weight
from ldm.modules.unet import is_gligen_layer
from ldm.pipeline import DefFillerPipeline, grounding_inputs
from runtime import distributed as D
from runtime.atomic import write_text_atomic
from runtime.errors import WRITE_ERRNOS, UserError, space_fix
from runtime.seeds import Stream, mix_seed
from training.checkpointing import RunCheckpoints, Saved, rng_state, set_rng_state, state_name, weights_name
from training.data import (
    DATA_SCHEMA,
    build_dataset,
    data_provenance,
    grid_batch,
    make_loader,
    write_held_out_procedural,
)
from training.distill import Teacher, check_teacher_unchanged
from training.divergence import DivergenceWatch
from training.ema import EMA
from training.lr_schedule import WarmupSchedule
from training.metrics import MetricsLog, gate_stats
from training.options import CLI_ONLY, DEFAULT_CKPT, RELEASE_URL, TrainOptions
from training.resume_rule import refuse_changes
from training.run_folder import complete_state
from training.sample_grid import write_grid

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
FIRST_CONV = "input_blocks.0.0.weight"
GENERATOR_PARTS = tuple(p for p in PARTS if p != "upscaler")


class NonFiniteLoss(UserError):
    """The loss became NaN or infinite; training stops before the weights are touched."""


# -- what trains ----------------------------------------------------------------------------------
def trainable_names(unet: nn.Module, mode: str) -> list[str]:
    """Names of the UNet parameters that train (see the module docstring)."""
    names = [n for n, _ in unet.named_parameters()]
    if mode == "all":
        return names
    widened = getattr(unet, "downsample_net", None) is not None
    return [n for n in names if is_gligen_layer(n) or (widened and n == FIRST_CONV)]


def freeze(models: DefFillerModels, names: list[str]) -> list[tuple[str, nn.Parameter]]:
    """``requires_grad`` only for ``names`` (UNet parameters); returns them in a fixed order."""
    for module in models.parts().values():
        module.requires_grad_(False)
    params = dict(models.model.named_parameters())
    for name in names:
        params[name].requires_grad_(True)
    return [(n, params[n]) for n in names]


def set_train_modes(models: DefFillerModels, mode: str) -> None:
    """Frozen modules in eval mode; the trained ones in train mode."""
    models.eval()
    unet = models.model
    if mode == "all":
        unet.train()
        return
    for name, module in unet.named_modules():
        if is_gligen_layer(name):
            module.train()


def checkpoint_names(unet: nn.Module) -> dict[str, str]:
    """``named_parameters()`` name -> the name the state dict, and so a checkpoint, uses.

    They differ where a state-dict hook renames (the mask encoder's ConvNeXt keeps the original
    names in checkpoints); EMA sections are stored under checkpoint names so that
    ``load_models(weights="ema")`` can overlay them on the UNet section.
    """
    by_id = {id(v): k for k, v in unet.state_dict(keep_vars=True).items()}
    return {n: by_id[id(p)] for n, p in unet.named_parameters()}


class GroundedDenoiser(nn.Module):
    """Mask encoder + downsampler + UNet as one forward, the module DDP wraps.

    Running the grounding networks inside the wrapped forward keeps every trained parameter inside
    DDP's view of the step (gradients of all of them are averaged across processes).
    """

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x_noisy: torch.Tensor, t: torch.Tensor, context: torch.Tensor, sem: torch.Tensor,
                grounding_mask: torch.Tensor, keep_extra: Optional[torch.Tensor] = None) -> torch.Tensor:
        tokens, extra = grounding_inputs(self.unet, sem, grounding_mask)
        if keep_extra is not None and extra is not None:  # zero downsampler features where 0
            extra = extra * keep_extra.to(extra.dtype).view(-1, *([1] * (extra.dim() - 1)))
        return self.unet(x_noisy, t, context, tokens, extra)


def null_grounding_mask(batch: int, prob: float, per: str, gen: torch.Generator,
                        device: torch.device) -> torch.Tensor:
    """1 where a sample keeps its grounding input, 0 where the null input replaces it: with probability
    ``prob`` for the whole batch (``per="batch"``) or for each sample on its own (``per="sample"``)."""
    if per == "batch":
        keep = torch.rand((), generator=gen, device=device) >= prob
        return keep.float().expand(batch).clone()
    return (torch.rand(batch, generator=gen, device=device) >= prob).float()


def unconditional_inputs(captions: list[str], grounding_mask: torch.Tensor, drop: torch.Tensor,
                         parts: Sequence[str]) -> tuple[list[str], torch.Tensor, Optional[torch.Tensor]]:
    """Where ``drop`` is true, the inputs of guidance's unconditional branch: the empty prompt, the null
    grounding tokens and zero downsampler features, each only if ``parts`` (``diffusion.uncond_drop``) names
    it. Returns captions, grounding mask and the downsampler keep mask (None: keep all)."""
    flags = drop.tolist()
    if "prompt" in parts:
        captions = ["" if d else c for c, d in zip(captions, flags)]
    if "tokens" in parts:
        grounding_mask = grounding_mask * (~drop).to(grounding_mask.dtype)
    keep_extra = (~drop).float() if "downsampler" in parts else None
    return captions, grounding_mask, keep_extra


def seed_globals(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def make_optimizer(params: list[nn.Parameter], opts: TrainOptions, device: torch.device) -> torch.optim.AdamW:
    """AdamW as in the original; the fused kernel where available (the per-tensor loop is slow on CPU)."""
    kwargs = dict(lr=opts.base_learning_rate, weight_decay=opts.weight_decay)
    if device.type in ("cuda", "cpu"):
        try:
            return torch.optim.AdamW(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.AdamW(params, **kwargs)


def make_grad_scaler(device: torch.device):
    """Loss scaling for fp16 autocast (torch >= 2.3 has one class for every device type)."""
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(device.type)
    if device.type != "cuda":
        raise UserError("--precision fp16 off CUDA needs torch >= 2.3; use bf16 or fp32")
    return torch.cuda.amp.GradScaler()


def initial_weights(models: DefFillerModels, ckpt: Optional[str]) -> str:
    """Load ``--ckpt`` strictly into ``models``; returns a description for the log."""
    if ckpt is None:
        return "random initialisation (--ckpt none)"
    path = Path(ckpt)
    if not path.is_file():
        if ckpt == DEFAULT_CKPT:
            raise UserError(
                f"initial weights {DEFAULT_CKPT} not found: download diffusion_pytorch_model.bin from "
                f"{RELEASE_URL} and save it as {Path(DEFAULT_CKPT).resolve()} (or pass --ckpt PATH to an "
                "SD-1.x .ckpt, or --ckpt none to train a tiny config from scratch)")
        raise UserError(f"--ckpt {ckpt}: file not found")
    loaded = read_checkpoint(path)
    loaded.sections.pop("diffusion", None)  # the schedule is the run's config's, not a weight to start from
    load_into(models, loaded)  # strict: a checkpoint of another architecture raises CheckpointError
    return f"{path} ({loaded.kind} checkpoint)"


# -- run-folder and config checks ----------------------------------------------------------------
# options a resumed run must keep (the data it sees, its random streams, its step size) unless
# --allow_config_change is given
GUARDED = ("train.DATA_ROOT", "data.root", "data.name", "data.procedural", "train.split", "train.seed",
           "train.base_learning_rate")
_WRITE_ERRNOS = WRITE_ERRNOS | {errno.EEXIST}


@contextmanager
def output_errors(run_dir: Path) -> Iterator[None]:
    """An unwritable, read-only or full output folder, or a file-size limit, as one line (writes stay atomic)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _WRITE_ERRNOS:
            raise
        what = exc.filename or run_dir
        hint = space_fix(exc) or "choose a writable folder with --OUTPUT_ROOT / --name"
        raise UserError(f"cannot write the run folder {run_dir} ({what}: {exc.strerror}); {hint}") from None


def _flat(cfg: Any) -> dict[str, Any]:
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else (cfg or {})
    out: dict[str, Any] = {}
    for section in ("data", "train"):
        for key, value in (plain.get(section) or {}).items():
            out[f"{section}.{key}"] = value
    return out


def check_split_unchanged(saved_meta: Mapping[str, str], now: Mapping[str, str], saved: Saved, allow: bool) -> None:
    """A resumed run keeps the content of its split file (its sha256, recorded in every checkpoint)."""
    before, after = saved_meta.get("split_sha256"), now.get("split_sha256")
    if before and after and before != after and not allow:
        raise UserError(f"{now['split']}: the split file changed since this run trained on it (sha256 {before[:12]} "
                        f"in {saved.weights.name}, {after[:12]} now); restore the split file, or start a new run "
                        "(another --name)")


def check_config_changes(saved_cfg: Optional[DictConfig], cfg: DictConfig, saved: Saved,
                         allow: bool) -> dict[str, list]:
    """``{key: [before, now]}`` of the data/train settings that differ from the checkpoint's config.

    A change of a :data:`GUARDED` key is refused (one line) unless ``allow``.
    """
    if saved_cfg is None:
        return {}
    before, now = _flat(saved_cfg), _flat(cfg)
    changes = {k: [before.get(k), now.get(k)] for k in sorted(set(before) | set(now))
               if before.get(k) != now.get(k) and k not in ("train.OUTPUT_ROOT", "train.allow_config_change")}
    if not allow:
        refuse_changes(saved.weights.parent.parent, {k: v for k, v in changes.items() if k in GUARDED},
                       "rerun with the run's settings, use a new --name, or pass --allow_config_change to resume "
                       "anyway (the change is recorded in config_changes.jsonl)", limit=len(GUARDED))
    return changes


def record_config_changes(run_dir: Path, iteration: int, changes: Mapping[str, list]) -> None:
    """Append one JSON line to ``run_dir/config_changes.jsonl`` (rewritten atomically)."""
    import json

    path = run_dir / "config_changes.jsonl"
    old = path.read_text() if path.is_file() else ""
    line = json.dumps({"iteration": iteration, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                       "changes": {k: v for k, v in changes.items()}}, default=str)
    write_text_atomic(old + line + "\n", path)


def check_image_size(cfg: DictConfig, models: DefFillerModels) -> None:
    """``data.image_size`` must be the size the model generates (UNet size x autoencoder downscale)."""
    size = int((cfg.get("data") or {}).get("image_size", DATA_SCHEMA["image_size"]))
    unet_size = int(models.model.image_size)
    factor = int(getattr(models.autoencoder, "downscale", 8))
    if size != unet_size * factor:
        raise UserError(f"data.image_size {size} does not fit the model: model.params.image_size {unet_size} x "
                        f"the autoencoder's downscale {factor} = {unet_size * factor}; set data.image_size: "
                        f"{unet_size * factor} (or --set data.image_size={unet_size * factor})")


# -- the trainer ----------------------------------------------------------------------------------
class Trainer:
    def __init__(self, opts: TrainOptions, cfg: DictConfig, info: Optional[D.DistInfo] = None) -> None:
        self.opts, self.info = opts, info or D.DistInfo()
        self.autocast_dtype = AUTOCAST_DTYPES[opts.precision]
        self.config_changes: dict[str, list] = {}
        self.device = self.info.device
        self.main = self.info.is_main
        self.run_dir = Path(opts.OUTPUT_ROOT) / opts.name
        self.checkpoints = RunCheckpoints(self.run_dir, keep=opts.keep_checkpoints)
        if opts.gradient_checkpointing is not None:
            cfg.model.params.use_checkpoint = bool(opts.gradient_checkpointing)
        cfg.train = OmegaConf.create({k: v for k, v in vars(opts).items() if k not in CLI_ONLY})
        # a distilled student: its teacher's guided output is the target, its recommendation unguided
        self.teacher = (Teacher(opts.distill_from, cfg, self.device, self.autocast_dtype or torch.float32)
                        if opts.distill_from else None)
        if self.teacher is not None:
            cfg = self.teacher.student_config(cfg)
        self.cfg = cfg
        if self.main:
            with output_errors(self.run_dir):
                self.run_dir.mkdir(parents=True, exist_ok=True)
                self.checkpoints.remove_stray_temporaries()
        D.barrier(self.info)

        # 1. dataset
        self.dataset = build_dataset(opts.DATA_ROOT, cfg, opts.split)
        self.provenance = data_provenance(opts.DATA_ROOT, cfg, opts.split)
        if self.teacher is not None:
            self.provenance.update(self.teacher.provenance())

        # 2. models: build, initial weights (unless resuming), freeze all but the trained parameters
        torch.manual_seed(opts.seed)  # from-scratch weights: identical on every rank
        self.models = build_models(cfg, parts=GENERATOR_PARTS)  # a mask upscaler trains apart (training.upscaler)
        resume = self.checkpoints.latest()
        if resume is None:
            if opts.ckpt is None and self.teacher is None and opts.trainable == "grounding":
                raise UserError("--ckpt none with train.trainable grounding would train nothing (a fresh "
                                "UNet's output layers are zero and frozen); pass --ckpt, or --trainable all "
                                "for a from-scratch model")
            self.init_source = (initial_weights(self.models, opts.ckpt) if self.teacher is None
                                else self.teacher.initialise(self.models))
        else:
            self.config_changes = check_config_changes(resume[2].config, cfg, resume[0], opts.allow_config_change)
            check_split_unchanged(resume[2].metadata, self.provenance, resume[0], opts.allow_config_change)
            check_teacher_unchanged(resume[2].metadata, self.teacher, str(resume[0].weights),
                                    opts.allow_config_change)
            check_diffusion(cfg, resume[2])  # a resumed run keeps its diffusion process
            load_into(self.models, resume[2])
            self.init_source = f"{resume[0].weights} (resuming)"
        check_image_size(cfg, self.models)
        # generation path (text cache, conditioning, samplers) shared with infer.py: the sample grids use
        # it, and training reads its text cache
        self.pipeline = DefFillerPipeline(self.models, self.device, self.autocast_dtype or torch.float32)
        seed_globals(mix_seed(opts.seed, Stream.GLOBALS, self.info.rank))  # per-rank global RNGs (dropout, if any)
        self.unet = self.models.model
        self.named_params = freeze(self.models, trainable_names(self.unet, opts.trainable))
        self.params = [p for _, p in self.named_params]
        set_train_modes(self.models, opts.trainable)
        self.denoiser: nn.Module = GroundedDenoiser(self.unet)
        if self.info.distributed:
            self.denoiser = DDP(self.denoiser, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                broadcast_buffers=False)

        # 3. optimiser, learning-rate schedule, gradient scaler (fp16), EMA
        self.optimizer = make_optimizer(self.params, opts, self.device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, WarmupSchedule(opts.scheduler_type, opts.warmup_steps, opts.total_iters,
                                           opts.warmup_from_zero))
        self.scaler = make_grad_scaler(self.device) if opts.precision == "fp16" else None
        self.ema = EMA(self.named_params, opts.ema_rate) if opts.enable_ema else None

        # 4. resume: optimiser, schedule, scaler, EMA, RNG states, iteration
        self.iteration = 0
        self.last_saved: Optional[Saved] = None
        if resume is not None:
            self._restore(*resume)

        self.grid = (grid_batch(self.dataset, opts.num_samples, opts.seed)
                     if self.main and not opts.disable_inference_in_training else None)
        self.metrics = MetricsLog(self.run_dir) if self.main else None
        self.divergence = DivergenceWatch()
        self._before_rise: Optional[Saved] = self.last_saved
        if self.metrics is not None and resume is not None:
            self.metrics.truncate_after(self.iteration)
            self._replay_divergence()
        if self.main:
            with output_errors(self.run_dir):
                if resume is not None and self.config_changes:
                    record_config_changes(self.run_dir, self.iteration, self.config_changes)
                write_text_atomic(OmegaConf.to_yaml(self.cfg), self.run_dir / "config.yaml")
                write_held_out_procedural(self.dataset, self.run_dir / "procedural")  # masks for infer.py
        self._stop_requested = False
        self._signal_received: Optional[int] = None
        self.stop_signal: Optional[int] = None  # the signal that stopped training early (main.py's exit code)

    # -- resume ---------------------------------------------------------------------------------
    def _restore(self, saved: Saved, state: dict[str, Any], weights) -> None:
        names = [n for n, _ in self.named_params]
        if state.get("trainable") != names:
            raise UserError(f"{saved.state}: the run trained a different set of parameters (train.trainable "
                            "or the model changed); use a new --name")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # the saved state carries the old schedule's settings; a longer --total_iters must win
        self.scheduler.lr_lambdas[0] = WarmupSchedule(self.opts.scheduler_type, self.opts.warmup_steps,
                                                      self.opts.total_iters, self.opts.warmup_from_zero)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if "ema" in weights.sections:
                to_param = {v: k for k, v in checkpoint_names(self.unet).items()}
                self.ema.load_state_dict({to_param.get(k, k): v for k, v in weights.sections["ema"].items()})
            else:
                warnings.warn(f"{saved.weights} has no EMA weights; the EMA restarts from the current weights")
        rng = state.get("rng") or []
        if state.get("world_size") == self.info.world_size and len(rng) > self.info.rank:
            set_rng_state(rng[self.info.rank], self.device)
        elif self.main:
            warnings.warn("the run is resumed with a different number of processes; per-process random "
                          "states are re-seeded (results differ from an uninterrupted run)")
        if state.get("batch_size") != self.opts.batch_size and self.main:
            warnings.warn(f"batch size changed from {state.get('batch_size')} to {self.opts.batch_size} "
                          "since the last checkpoint; the data order differs from an uninterrupted run")
        self.iteration = int(state["iteration"])
        self.last_saved = saved

    # -- one batch -> loss ------------------------------------------------------------------------
    def step_generator(self) -> torch.Generator:
        """This iteration's random source (timesteps, noise, null grounding, latent sampling)."""
        seed = mix_seed(self.opts.seed, Stream.STEP, self.iteration, self.info.rank)
        return torch.Generator(device=self.device).manual_seed(seed)

    def text_context(self, captions: list[str]) -> torch.Tensor:
        """Frozen text encoder output, each distinct caption encoded once (the pipeline's cache)."""
        return self.pipeline.encode_text(captions)

    def autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def compute_loss(self, batch: dict[str, Any], gen: torch.Generator) -> torch.Tensor:
        """MSE between the UNet's output and its target (the noise, or v: ``diffusion.parameterization``),
        t uniform over the schedule (per-sample Min-SNR-gamma weights when ``min_snr_gamma`` > 0; off by
        default, as the paper)."""
        diffusion = self.models.diffusion
        image = batch["image"].to(self.device, non_blocking=True)
        sem = batch["sem"].to(self.device, non_blocking=True)
        b = image.shape[0]
        with torch.no_grad(), (self.autocast() if self.opts.precision == "bf16" else nullcontext()):
            x0 = self.models.autoencoder.encode(image, generator=gen).float()  # scaled latent (fp16: fp32 VAE)
        # Null grounding input with probability null_grounding_prob: for the whole batch at once (the
        # original GLIGEN/DefFiller) or per sample (train.null_grounding_per). The downsampler
        # features stay, as in the original and in classifier-free guidance.
        grounding_mask = null_grounding_mask(b, self.opts.null_grounding_prob, self.opts.null_grounding_per,
                                             gen, self.device)
        captions, keep_extra = list(batch["caption"]), None
        if self.teacher is not None:  # the student only ever runs with its full conditioning
            grounding_mask = torch.ones_like(grounding_mask)
        elif self.opts.cond_drop_prob > 0:  # the unconditional branch's inputs, all together
            drop = torch.rand(b, generator=gen, device=self.device) < self.opts.cond_drop_prob
            captions, grounding_mask, keep_extra = unconditional_inputs(captions, grounding_mask, drop,
                                                                        diffusion.uncond_drop)
        context = self.text_context(captions)
        t = torch.randint(0, diffusion.num_timesteps, (b,), generator=gen, device=self.device)
        noise = diffusion.noise(x0.shape, generator=gen, device=self.device)
        x_noisy = diffusion.q_sample(x0, t, noise)
        target = (diffusion.target(x0, noise, t) if self.teacher is None
                  else self.teacher.target(x_noisy, t, sem, captions))
        with self.autocast():
            out = self.denoiser(x_noisy, t, context, sem, grounding_mask, keep_extra)
        if not self.opts.min_snr_gamma:
            return F.mse_loss(out.float(), target)
        per_sample = (out.float() - target).pow(2).flatten(1).mean(1)
        v = diffusion.parameterization == "v"
        weight = min_snr_weight(diffusion.alphas_cumprod[t], self.opts.min_snr_gamma, diffusion.parameterization,
                                plus_one=v)
        return (per_sample * weight).mean()

    # -- the loop -------------------------------------------------------------------------------
    def train(self) -> int:
        """Train until ``total_iters``; returns the final iteration."""
        opts = self.opts
        if self.iteration >= opts.total_iters:
            if self.main:
                print(f"{self.run_dir}: already trained for {self.iteration} iterations (total_iters "
                      f"{opts.total_iters}); nothing to do")
            return self.iteration
        self._print_summary()
        loader = make_loader(self.dataset, opts.batch_size, opts.workers, opts.seed, self.info.rank,
                             self.info.world_size, self.iteration, pin_memory=self.device.type == "cuda")
        bar = tqdm(total=opts.total_iters, initial=self.iteration, desc="training", dynamic_ncols=True,
                   disable=not self.main or opts.no_progress, smoothing=0.05)
        window_loss, window_n, window_start = 0.0, 0, time.perf_counter()
        previous = self._install_signal_handlers()
        try:
            while self.iteration < opts.total_iters:
                if self._agree_to_stop():
                    self.stop_signal = self._signal_received or signal.SIGTERM
                    with output_errors(self.run_dir):
                        self._save()
                    if self.main:
                        bar.write(f"stopped at iteration {self.iteration}; checkpoint saved in {self.run_dir} — "
                                  "rerun the same command to resume", file=sys.stderr)
                    break
                batch = next(loader)
                self.optimizer.zero_grad(set_to_none=True)
                loss = self.compute_loss(batch, self.step_generator())
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                else:
                    loss.backward()
                mean_loss = float(D.all_reduce_mean(self.info, loss.detach().float()))
                if not math.isfinite(mean_loss):
                    raise self._non_finite(f"loss is {mean_loss}")
                grad_norm = self._optimizer_step()
                self.iteration += 1

                window_loss, window_n = window_loss + mean_loss, window_n + 1
                bar.update(1)
                bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}", refresh=False)
                if self.iteration % opts.log_every == 0 or self.iteration == opts.total_iters:
                    elapsed = time.perf_counter() - window_start
                    self._log(window_loss / window_n, grad_norm, window_n / max(elapsed, 1e-9))
                    self._watch_divergence(window_loss / window_n, self.iteration - window_n, bar)
                    window_loss, window_n, window_start = 0.0, 0, time.perf_counter()
                done = self.iteration == opts.total_iters
                sample_every = opts.sample_every_iters or opts.save_every_iters
                if not opts.disable_inference_in_training and (self.iteration % sample_every == 0 or done):
                    self._write_samples()
                if self.iteration % opts.save_every_iters == 0 or done:
                    with output_errors(self.run_dir):
                        self._save()
        finally:
            bar.close()
            self._restore_signal_handlers(previous)
            if self.metrics is not None:
                self.metrics.close()
        D.barrier(self.info)
        return self.iteration

    def _optimizer_step(self) -> float:
        """Unscale (fp16), measure/clip the gradient norm, step; the weights never see a NaN."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) if grads else torch.zeros(())
        if self.opts.grad_clip > 0 and grads:
            torch._foreach_mul_(grads, (self.opts.grad_clip / (norm + 1e-6)).clamp(max=1.0))
        norm_value = float(norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skips the step when fp16 gradients overflowed
            self.scaler.update()
        else:
            if not math.isfinite(norm_value):
                raise self._non_finite(f"gradient norm is {norm_value}")
            self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update()
        return norm_value

    def _non_finite(self, what: str) -> NonFiniteLoss:
        last = (f"last good checkpoint: {self.last_saved.weights} (iteration {self.last_saved.iteration})"
                if self.last_saved is not None else "no checkpoint saved yet")
        return NonFiniteLoss(f"{what} at iteration {self.iteration + 1}; stopped before updating the weights; "
                             f"{last}; lower --base_learning_rate or use --precision fp32/bf16, then rerun to resume")

    # -- logging, samples, checkpoints ----------------------------------------------------------
    def _print_summary(self) -> None:
        if not self.main:
            return
        n_train = sum(p.numel() for p in self.params)
        n_all = sum(p.numel() for m in self.models.parts().values() for p in m.parameters())
        print(f"run {self.run_dir} | device {self.device} x{self.info.world_size} | precision {self.opts.precision}"
              f" | data {len(self.dataset)} samples | trainable {n_train / 1e6:.2f}M of {n_all / 1e6:.2f}M"
              f" parameters ({self.opts.trainable}) | weights: {self.init_source}"
              + (f" | resuming at iteration {self.iteration}" if self.iteration else ""), flush=True)

    def _watch_divergence(self, loss: float, window_start: int, bar) -> None:
        """Rank 0 warns once when the window losses have left their level (:mod:`training.divergence`)."""
        if not self.main:
            return
        if self.divergence.update(self.iteration, loss, window_start):
            bar.write(self.divergence.message(loss, self._before_rise),
                      file=sys.stderr)

    def _replay_divergence(self) -> None:
        """Rank 0 of a resumed run reads its logged windows; a log that shows a blow-up warns now, naming the
        newest checkpoint still in the folder from before the rise."""
        rows = self.metrics.jsonl.rows()
        diverged = self.divergence.replay(rows)
        if self.divergence.above or diverged:
            before = [i for i in self.checkpoints.complete_iterations() if i <= self.divergence.rose_at]
            self._before_rise = (Saved(before[-1], self.checkpoints.dir / weights_name(before[-1]),
                                       complete_state(self.checkpoints.dir, before[-1])) if before else None)
        if diverged:
            print(self.divergence.message(self.divergence.last, self._before_rise), file=sys.stderr, flush=True)

    def _log(self, loss: float, grad_norm: float, it_per_s: float) -> None:
        if self.metrics is None:
            return
        scalars = {"loss": loss, "lr": self.scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                   "it_per_s": it_per_s, **gate_stats(self.unet)}
        if self.device.type == "cuda":
            scalars["memory/peak_gib"] = torch.cuda.max_memory_allocated(self.device) / 2 ** 30
        self.metrics.log(self.iteration, scalars)

    @torch.no_grad()
    def _write_samples(self) -> None:
        """Rank 0 samples the fixed grid batch (mask | real | generated) and writes a PNG."""
        if self.main:
            grid, pipe = self.grid, self.pipeline
            self.models.eval()
            noise = torch.randn(pipe.latent_shape(grid["sem"].shape[0]),
                                generator=torch.Generator().manual_seed(mix_seed(self.opts.seed, Stream.GRID_NOISE)))
            with self.ema.applied() if self.ema is not None else nullcontext():  # as infer.py samples
                cond, uncond = pipe.conditioning(grid["sem"], list(grid["caption"]))
                latents = pipe.sample(cond, uncond, noise, sampler=self.opts.sampler, steps=self.opts.sample_steps,
                                      guidance_scale=1.0 if self.teacher is not None else self.opts.guidance_scale)
            images = pipe.decode(latents)
            write_grid(self.run_dir / "samples" / f"iter_{self.iteration:08d}.png", grid["sem"], grid["image"],
                       images, list(grid["caption"]))
            set_train_modes(self.models, self.opts.trainable)
        D.barrier(self.info)

    def _save(self) -> None:
        """Checkpoint at the current iteration (collective: every rank contributes its RNG state)."""
        if self.last_saved is not None and self.last_saved.iteration == self.iteration:
            return
        rngs = D.gather_objects(self.info, rng_state(self.device))
        if self.main:
            sections = model_sections(self.models)
            if self.ema is not None:
                names = checkpoint_names(self.unet)
                sections["ema"] = {names[n]: v for n, v in self.ema.state_dict().items()}
            state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                     "rng": rngs, "world_size": self.info.world_size, "batch_size": self.opts.batch_size,
                     "seed": self.opts.seed, "trainable": [n for n, _ in self.named_params]}
            self.last_saved = self.checkpoints.save(self.iteration, sections, self.cfg, state,
                                                    {"run": self.opts.name, "init": self.init_source,
                                                     **self.provenance},
                                                    spare=self._before_rise.iteration if self._before_rise else None)
        else:
            self.last_saved = Saved(self.iteration, self.checkpoints.dir / weights_name(self.iteration),
                                    self.checkpoints.dir / state_name(self.iteration))
        if self.divergence.above == 0:  # saved while the loss was still at its level
            self._before_rise = self.last_saved
        D.barrier(self.info)

    # -- graceful stop (Ctrl-C / SIGTERM): finish the step, save, exit --------------------------
    def _install_signal_handlers(self) -> dict:
        previous = {}

        def request_stop(signum, frame):
            if self._stop_requested:  # second signal: give up immediately
                raise KeyboardInterrupt
            self._stop_requested = True
            self._signal_received = int(signum)

        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, request_stop)
        except ValueError:  # not the main thread (e.g. called from a notebook worker): no handlers
            pass
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def _agree_to_stop(self) -> bool:
        if not self.info.distributed:
            return self._stop_requested
        flag = torch.tensor([1.0 if self._stop_requested else 0.0], device=self.device)
        return bool(D.all_reduce_mean(self.info, flag) > 0)

