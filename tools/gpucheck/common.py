"""What every section of ``tools/gpu_check.py`` shares: the run context (device, mode, configs,
work folder), random weights, timing, memory, and the one random checkpoint the generation
sections read."""
from __future__ import annotations

import contextlib
import gc
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence
from unittest import mock

import torch
from omegaconf import DictConfig, OmegaConf

from ldm.diffusion.guidance import DEFAULT_GUIDANCE_SCALE

REPO = Path(__file__).resolve().parents[2]

FULL_CONFIG = REPO / "configs" / "sd_saliency_900.yaml"
TINY_CONFIG = REPO / "tests" / "assets" / "tiny.yaml"

# Procedural data (no dataset needed) at the config's image size; the tiny config gets the tiny
# training set-up of the test suite (32 px images, 8 px latents).
FULL_DATA = {"procedural": {"n_per_category": 4, "seed": 0}}
TINY_DATA = {"name": "procedural", "image_size": 32, "procedural": {"n_per_category": 4, "seed": 0},
             "categories": [{"name": "inclusion", "prefix": "In", "index": 1, "prompt": "inclusion"},
                            {"name": "patches", "prefix": "Pa", "index": 2, "prompt": "patches"},
                            {"name": "scratches", "prefix": "Sc", "index": 3, "prompt": "scratches"}]}
TINY_TIMESTEPS = 50


@dataclass
class Plan:
    """Sizes of one run: ``full`` (default), ``quick`` (under 8 min on one GPU) or ``tiny`` (CPU test)."""

    warmup: int                       # training iterations not timed
    iters: int                        # training iterations timed
    batches: tuple[int, ...]          # generation batch sweep (masks per batch)
    repeats: int                      # timed generation runs per batch size (median)
    reference_masks: int              # masks solved with the dense reference (ODE error)
    original_masks: int               # masks generated the original's way
    samplers: tuple[tuple[str, int], ...] = (("plms", 50), ("unipc", 20))
    guidance: float = DEFAULT_GUIDANCE_SCALE


PLANS = {
    "full": Plan(warmup=2, iters=10, batches=(1, 4, 16, 32), repeats=2, reference_masks=4, original_masks=2),
    "quick": Plan(warmup=1, iters=3, batches=(1, 4, 16, 32), repeats=1, reference_masks=2, original_masks=1),
    # 50 timesteps and short samplers: every code path, a 50-step reference solve instead of 981
    "tiny": Plan(warmup=1, iters=1, batches=(1, 2), repeats=1, reference_masks=1, original_masks=1,
                 samplers=(("plms", 10), ("unipc", 5))),
}


@dataclass
class Context:
    """One gpu_check run: where, how big, and the files the sections share."""

    device: torch.device
    mode: str                          # full | quick | tiny
    out: Path
    work: Path
    plan: Plan
    config_path: Path = field(init=False)
    _checkpoint: Optional[Path] = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.config_path = self.work / "config.yaml"
        OmegaConf.save(self.config(), self.config_path)

    @property
    def tiny(self) -> bool:
        return self.mode == "tiny"

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def precisions(self) -> tuple[str, ...]:
        """fp16 autocast is a GPU path; CPU runs check fp32 and bf16."""
        return ("fp32", "fp16", "bf16") if self.cuda else ("fp32", "bf16")

    def config(self) -> DictConfig:
        """The model config with procedural training data (read fresh: the trainer edits its copy)."""
        from ldm.config import load_config

        cfg = load_config(TINY_CONFIG if self.tiny else FULL_CONFIG)
        data = TINY_DATA if self.tiny else FULL_DATA
        cfg.data = OmegaConf.merge(cfg.get("data") or {}, data)
        if self.tiny:
            cfg.diffusion.params.timesteps = TINY_TIMESTEPS
        return cfg

    def checkpoint(self) -> Path:
        """A random-weight checkpoint of the config in the project's format (written once)."""
        if self._checkpoint is None:
            from ldm.build import build_models
            from ldm.checkpoint import model_sections, save_checkpoint

            cfg = self.config()
            torch.manual_seed(0)
            models = build_models(cfg, device=build_device(self.device))
            randomize_(models)
            self._checkpoint = save_checkpoint(self.work / "random.safetensors", model_sections(models), cfg)
            del models
            free_memory()
        return self._checkpoint


def build_device(device: torch.device) -> Optional[str]:
    """Initialise weights directly on the GPU (seconds, where a CPU takes a minute for the full model)."""
    return str(device) if device.type == "cuda" else None


@torch.no_grad()
def randomize_(models: Any, seed: int = 0) -> None:
    """Give every all-zero UNet parameter (output layers, gates, biases) small random values, as a
    trained checkpoint has, so that every trained parameter gets a gradient and eps is not zero."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    for p in models.model.parameters():
        if p.is_floating_point() and not p.any():
            p.copy_(0.02 * torch.randn(p.shape, generator=g))


def random_initial_weights(models: Any, ckpt: Optional[str]) -> str:
    """Stand-in for ``trainer.initial_weights``: random weights instead of a release file."""
    randomize_(models)
    return "random weights (gpu_check)"


@contextlib.contextmanager
def random_weight_trainer(device: torch.device) -> Iterator[Any]:
    """``trainer`` whose runs start from random weights built on ``device`` (nothing is read)."""
    from ldm.build import build_models
    from training import trainer

    on = build_device(device)
    with mock.patch.object(trainer, "initial_weights", random_initial_weights), \
            mock.patch.object(trainer, "build_models", lambda cfg, **kw: build_models(cfg, device=on, **kw)):
        yield trainer


def train_argv(ctx: Context, out: Path, name: str, **over: Any) -> list[str]:
    """``main.py`` arguments of a short run of the context's config (``over``: extra options)."""
    opts = {"OUTPUT_ROOT": str(out), "name": name, "ckpt": "random", "batch_size": 2, "workers": 0,
            "trainable": "grounding", "save_every_iters": 10 ** 9, "disable_inference_in_training": "true",
            "warmup_steps": 1, "base_learning_rate": 1e-4, "device": str(ctx.device),
            "threads": 1 if ctx.tiny else 0, **over}
    argv = ["--yaml_file", str(ctx.config_path)]
    for key, value in opts.items():
        argv += [f"--{key}", str(value)]
    return argv


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> Optional[float]:
    """Peak GPU memory allocated since :func:`reset_peak` (None on CPU)."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Seconds ``fn`` takes (device synchronised on both sides) and its result."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def free_memory() -> None:
    """Hand the GPU's cached blocks back before the next measurement of peak memory (nothing to do without one:
    the collection alone takes a quarter of a second a call)."""
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def autocast(device: torch.device, precision: str):
    """Autocast context of a precision name (fp32: none)."""
    dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
