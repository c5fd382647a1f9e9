"""Training options: the original DefFiller/GLIGEN flags plus precision, checkpointing and device.

Every option has four sources, strongest first: the command line flags, ``--set key=value`` (any
config key, e.g. ``train.sample_steps=25`` or ``data.image_size=64``), the config's ``train:``
section, then :data:`DEFAULTS` (the original trainer's defaults where it had the option). Keys are
strict (:mod:`runtime.options`): an unknown key in the YAML or in ``--set`` is an error naming the
nearest valid one. ``--name``, ``--yaml_file`` and ``--allow_config_change`` only come from the
command line.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, fields
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from ldm.config import check_config
from runtime import options as O
from runtime.cli import add_device, add_threads
from runtime.errors import UserError
from training.data import DATA_SCHEMA

DEFAULT_CKPT = "model_sem/sem_diffusion_pytorch_model.bin"
RELEASE_URL = "https://huggingface.co/gligen/gligen-generation-sem/blob/main/diffusion_pytorch_model.bin"
PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULERS = ("constant", "cosine")
TRAINABLE = ("grounding", "all")
SAMPLERS = ("plms", "ddim", "dpmsolver++", "unipc")
NULL_GROUNDING = ("batch", "sample")


@dataclass
class TrainOptions:
    """Resolved options of one run (also written to the run folder's ``config.yaml``)."""

    name: str = "sd"
    yaml_file: str = "configs/sd_saliency_900.yaml"
    # -- the original flags (same names, same defaults) --
    DATA_ROOT: Optional[str] = None          # None: the config's data (procedural, or DATA/<data.name>)
    OUTPUT_ROOT: str = "OUTPUT"
    seed: int = 123
    base_learning_rate: float = 5e-5
    weight_decay: float = 0.0
    warmup_steps: int = 10000
    scheduler_type: str = "constant"
    batch_size: int = 2
    workers: int = 1
    ckpt: Optional[str] = DEFAULT_CKPT       # None: from scratch (tiny configs)
    enable_ema: bool = False
    ema_rate: float = 0.9999
    total_iters: int = 30000
    save_every_iters: int = 10000
    disable_inference_in_training: bool = False
    # -- ours --
    precision: str = "fp32"
    gradient_checkpointing: Optional[bool] = None   # None: the model config's use_checkpoint
    device: str = "auto"
    threads: int = 0                         # CPU threads per process; 0: PyTorch's default
    trainable: str = "grounding"
    null_grounding_prob: float = 0.1
    null_grounding_per: str = "batch"        # batch: the whole batch at once (the original); sample: each sample
    cond_drop_prob: float = 0.0              # per sample: all of diffusion.uncond_drop dropped together (0: never)
    warmup_from_zero: bool = True            # true: warm-up's first step uses lr 0 (the original); false: lr/warmup
    grad_clip: float = 0.0                   # 0: no clipping (the original does not clip)
    min_snr_gamma: float = 0.0               # 0: plain MSE on eps (the original); >0: Min-SNR-gamma weights
    log_every: int = 10
    sample_every_iters: Optional[int] = None  # None: with every checkpoint, like the original
    num_samples: int = 4
    sampler: str = "plms"
    sample_steps: int = 50
    guidance_scale: float = 5.0
    keep_checkpoints: int = 0                # 0: keep all
    split: Optional[str] = None              # a split JSON (dataset/splits.py): train on its "train" list
    distill_from: Optional[str] = None       # a teacher checkpoint: learn its guided output (training/distill.py)
    allow_config_change: bool = False        # resume even though data root, seed or learning rate changed
    no_progress: bool = False                # no tqdm bar (the periodic log lines stay)


DEFAULTS = TrainOptions()
CLI_ONLY = ("name", "yaml_file", "allow_config_change", "no_progress")
FIELD_NAMES = [f.name for f in fields(TrainOptions)]

TRAIN_SCHEMA = {n: O.Open() for n in FIELD_NAMES if n not in CLI_ONLY}
SECTIONS = {"data": DATA_SCHEMA, "train": TRAIN_SCHEMA}


def parse_bool(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("true", "1", "yes", "y", "on"):
        return True
    if value in ("false", "0", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def optional_path(text: Any) -> Optional[str]:
    if text is None:
        return None
    value = str(text).strip()
    return None if value.lower() in ("", "none", "null", "scratch") else value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Fine-tune DefFiller (GLIGEN-sem on SD-1.x) on mask/image pairs. Runs live in "
                    "OUTPUT_ROOT/name and resume automatically from their latest checkpoint.",
        epilog="examples:\n"
               "  python main.py --name demo --config configs/demo.yaml         # CPU demo, no downloads\n"
               "  python main.py --name exp --data_root DATA/SD-saliency-900    # the paper's fine-tuning\n"
               "  torchrun --nproc_per_node=4 main.py --name exp --precision bf16\n"
               "Options not given on the command line come from the config's train: section, then "
               "from the defaults shown.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    d = DEFAULTS
    p.add_argument("--name", default=d.name, help="experiment folder OUTPUT_ROOT/name (default: %(default)s)")
    p.add_argument("--config", "--yaml_file", dest="yaml_file", default=d.yaml_file,
                   help="model/data config (default: %(default)s)")
    add = p.add_argument
    add("--data_root", "--DATA_ROOT", dest="DATA_ROOT", type=optional_path, default=None,
        help="dataset folder (Source Images + Ground truth [+ caption.json]) or a folder holding "
             "<data.name>/ (default: the config's data; configs/demo.yaml generates defects procedurally)")
    add("--output_root", "--OUTPUT_ROOT", dest="OUTPUT_ROOT", default=None,
        help=f"runs are stored in OUTPUT_ROOT/name (default: {d.OUTPUT_ROOT})")
    add("--seed", type=int, default=None, help=f"seed for data order, noise and timesteps (default: {d.seed})")
    add("--base_learning_rate", type=float, default=None, help=f"AdamW learning rate (default: {d.base_learning_rate})")
    add("--weight_decay", type=float, default=None, help=f"AdamW weight decay (default: {d.weight_decay})")
    add("--warmup_steps", type=int, default=None, help=f"linear warm-up iterations (default: {d.warmup_steps})")
    add("--scheduler_type", choices=SCHEDULERS, default=None,
        help=f"learning rate after warm-up: constant or cosine decay to 0 (default: {d.scheduler_type})")
    add("--batch_size", type=int, default=None, help=f"batch size per process (default: {d.batch_size})")
    add("--workers", type=int, default=None, help=f"data-loader worker processes per process (default: {d.workers})")
    add("--ckpt", type=optional_path, default=argparse.SUPPRESS,
        help="initial weights: the GLIGEN-sem release .bin, a GLIGEN/DefFiller training .pth, an SD-1.x "
             f".ckpt or our .safetensors; 'none' trains from scratch (default: {d.ckpt})")
    add("--enable_ema", type=parse_bool, nargs="?", const=True, default=None,
        help=f"keep an exponential moving average of the trained weights (default: {d.enable_ema})")
    add("--ema_rate", type=float, default=None, help=f"EMA decay (default: {d.ema_rate})")
    add("--total_iters", type=int, default=None, help=f"training iterations (default: {d.total_iters})")
    add("--save_every_iters", type=int, default=None, help=f"checkpoint interval (default: {d.save_every_iters})")
    add("--disable_inference_in_training", type=parse_bool, nargs="?", const=True, default=None,
        help="skip the sample grids written with checkpoints (default: false)")
    add("--precision", choices=PRECISIONS, default=None,
        help="fp32, or bf16/fp16 autocast with fp32 master weights (fp16 uses a gradient scaler) "
             f"(default: {d.precision})")
    add("--gradient_checkpointing", type=parse_bool, nargs="?", const=True, default=None,
        help="recompute activations in the backward pass to save memory (default: the config's "
             "model.params.use_checkpoint)")
    add_device(p, None, "auto; under torchrun each process takes GPU LOCAL_RANK")
    add_threads(p, None, "0", note=", per process; on a busy or small CPU, 1 thread is often faster than several "
                                   "that wait for each other")
    add("--trainable", choices=TRAINABLE, default=None,
        help="grounding: gated self-attention, mask encoder, downsampler (+ widened first conv), as "
             "in the paper; all: the whole UNet, for from-scratch tiny models (default: grounding)")
    add("--null_grounding_per", choices=NULL_GROUNDING, default=None,
        help="classifier-free guidance training: with probability null_grounding_prob (0.1) replace the "
             "mask input by the null input for the whole batch (batch, the original) or for each sample "
             "independently (sample) (default: batch)")
    add("--warmup_from_zero", type=parse_bool, nargs="?", const=True, default=None,
        help="true: the warm-up rises from lr 0 at the first step, as the original (transformers' "
             "schedule), so the first step does not move the weights; false: from lr/warmup_steps "
             "(default: true)")
    add("--sample_every_iters", type=int, default=None,
        help="sample-grid interval (default: with every checkpoint)")
    add("--split", type=optional_path, default=None,
        help="split JSON (dataset/splits.py); training uses its 'train' list (default: all pairs)")
    add("--distill_from", type=optional_path, default=None,
        help="guidance distillation: start from this trained checkpoint and learn its guided output (the guidance "
             "its sampling: section recommends), so that the result samples unguided at half the cost "
             "(default: off)")
    O.add_set_argument(p, "train.sample_steps=25 data.image_size=64 model.params.num_heads=4",
                       " (the flags above win over --set)")
    add("--allow_config_change", action="store_true",
        help="resume even though the data root, seed or learning rate differ from the run's; the change "
             "is appended to OUTPUT_ROOT/name/config_changes.jsonl (default: refuse)")
    add("--no_progress", action="store_true", help="no progress bar (the log lines every log_every iterations stay)")
    add("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # torch.distributed.launch
    return p


def _check(opts: TrainOptions) -> None:
    def positive(name: str, allow_zero: bool = False) -> None:
        value = getattr(opts, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
            raise UserError(f"{name} must be an integer >= {0 if allow_zero else 1}, got {value!r}")

    for name in ("batch_size", "total_iters", "save_every_iters", "log_every", "num_samples", "sample_steps"):
        positive(name)
    for name in ("workers", "warmup_steps", "keep_checkpoints", "threads"):
        positive(name, allow_zero=True)
    if opts.sample_every_iters is not None:
        positive("sample_every_iters")
    if not (math.isfinite(opts.base_learning_rate) and opts.base_learning_rate > 0):
        raise UserError(f"base_learning_rate must be a positive number, got {opts.base_learning_rate}")
    if not (math.isfinite(opts.weight_decay) and opts.weight_decay >= 0):
        raise UserError(f"weight_decay must be >= 0, got {opts.weight_decay}")
    if not 0.0 <= opts.ema_rate < 1.0:
        raise UserError(f"ema_rate must lie in [0, 1), got {opts.ema_rate}")
    for name in ("null_grounding_prob", "cond_drop_prob"):
        if not 0.0 <= getattr(opts, name) <= 1.0:
            raise UserError(f"{name} must lie in [0, 1], got {getattr(opts, name)}")
    if opts.grad_clip < 0:
        raise UserError(f"grad_clip must be >= 0, got {opts.grad_clip}")
    if not (math.isfinite(opts.min_snr_gamma) and opts.min_snr_gamma >= 0):
        raise UserError(f"min_snr_gamma must be >= 0 (0: off), got {opts.min_snr_gamma}")
    for name, allowed in (("precision", PRECISIONS), ("scheduler_type", SCHEDULERS),
                          ("null_grounding_per", NULL_GROUNDING),
                          ("trainable", TRAINABLE), ("sampler", SAMPLERS)):
        if getattr(opts, name) not in allowed:
            raise UserError(f"{name} must be one of {', '.join(allowed)}, got {getattr(opts, name)!r}")
    if not opts.name or "/" in opts.name or opts.name in (".", ".."):
        raise UserError(f"--name {opts.name!r}: give a plain folder name")


def apply_overrides(cfg: DictConfig, items: Sequence[str], flag: str = "--set") -> DictConfig:
    """``cfg`` with ``key=value`` overrides applied (strict keys, see :func:`ldm.config.check_config`)."""
    if not items:
        return cfg
    plain = OmegaConf.to_container(cfg, resolve=True)
    from ldm.config import schema_for

    for key, value in O.parse_set(items, flag):
        plain = O.set_value(plain, key, value, schema_for(plain, SECTIONS), f"{flag} {key}")
    return OmegaConf.create(plain)


def resolve_options(cli: argparse.Namespace, cfg: DictConfig) -> TrainOptions:
    """Merge command line > config ``train:`` > defaults; validate; return the run's options."""
    check_config(cfg, f"config {cli.yaml_file}", SECTIONS)
    section = cfg.get("train")
    from_yaml: dict[str, Any] = {}
    if section is not None:
        if not isinstance(section, DictConfig):
            raise UserError(f"{cli.yaml_file}: `train:` must be a mapping of option: value")
        from_yaml = OmegaConf.to_container(section, resolve=True)
    values = {f.name: getattr(DEFAULTS, f.name) for f in fields(TrainOptions)}
    for key, value in from_yaml.items():
        if key in ("ckpt", "DATA_ROOT", "split", "distill_from"):
            value = optional_path(value)
        elif key in ("enable_ema", "disable_inference_in_training", "gradient_checkpointing",
                     "warmup_from_zero") and value is not None:
            try:
                value = parse_bool(value)
            except argparse.ArgumentTypeError as exc:
                raise UserError(f"{cli.yaml_file}: train.{key}: {exc}") from None
        values[key] = value
    for key in FIELD_NAMES:
        if key in vars(cli) and getattr(cli, key) is not None:
            values[key] = getattr(cli, key)
    if "ckpt" in vars(cli):  # an explicit --ckpt none must win over the config
        values["ckpt"] = cli.ckpt
    defaults = TrainOptions()
    for key, value in values.items():  # types from YAML: ints for floats are fine, strings are not
        ref = getattr(defaults, key)
        if isinstance(ref, float) and isinstance(value, int) and not isinstance(value, bool):
            values[key] = float(value)
        elif isinstance(ref, (int, float)) and not isinstance(ref, bool) and isinstance(value, str):
            try:  # YAML reads 5e-5 (no dot) as a string
                values[key] = type(ref)(float(value)) if isinstance(ref, float) else int(value)
            except ValueError:
                raise UserError(f"{cli.yaml_file}: train.{key} must be a number, got {value!r}") from None
    opts = TrainOptions(**values)
    _check(opts)
    _check_against_config(opts, cfg, str(cli.yaml_file))
    return opts


def _check_against_config(opts: TrainOptions, cfg: DictConfig, where: str) -> None:
    """Options that must fit the model config, checked before anything trains."""
    params = (cfg.get("diffusion") or {}).get("params") or {}
    timesteps = int(params.get("timesteps", 1000))
    if opts.sample_steps > timesteps:
        raise UserError(f"train.sample_steps {opts.sample_steps} exceeds the schedule's {timesteps} timesteps "
                        f"({where} diffusion.params.timesteps); use at most {timesteps}")
    if not math.isfinite(opts.guidance_scale):
        raise UserError(f"train.guidance_scale must be a finite number, got {opts.guidance_scale}")
    data = cfg.get("data") or {}
    size = data.get("image_size", DATA_SCHEMA["image_size"])
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise UserError(f"{where}: data.image_size must be an integer >= 8, got {size!r}")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)
