"""Shared pieces of the trainer tests: a tiny training config and an in-process run helper."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "assets" / "tiny.yaml"

# The ldm test model (8x8 latents from a 4x-downscaling AutoencoderKL, tiny CLIP, convnext_atto
# mask encoder) trained on 32x32 procedural defects, one thread, no sample grid.
TRAIN_TINY = {
    "data": {"name": "procedural", "image_size": 32, "procedural": {"n_per_category": 4, "seed": 0},
             "categories": [{"name": "inclusion", "prefix": "In", "index": 1},
                            {"name": "patches", "prefix": "Pa", "index": 2},
                            {"name": "scratches", "prefix": "Sc", "index": 3}]},
    "train": {"ckpt": "none", "trainable": "grounding", "batch_size": 2, "workers": 0,
              "base_learning_rate": 1e-3, "warmup_steps": 2, "total_iters": 2, "save_every_iters": 1000,
              "log_every": 1, "threads": 1, "disable_inference_in_training": True, "seed": 7,
              "num_samples": 2, "sampler": "ddim", "sample_steps": 2, "guidance_scale": 2.0},
}


def write_release(path: Path, config_path: Path = TINY, seed: int = 0) -> Path:
    """A stand-in for the GLIGEN-sem release file: the official pickle layout, every weight random and
    non-zero (gates open), as a pretrained starting point for the tiny model."""
    from ldm.build import build_models
    from ldm.checkpoint import model_sections
    from ldm.config import load_config, to_original_targets

    cfg = load_config(config_path)
    torch.manual_seed(seed)
    sections = model_sections(build_models(cfg))
    payload = {part: {k: (0.1 * torch.randn_like(v) if v.is_floating_point() and part != "diffusion" else v)
                      for k, v in sd.items()} for part, sd in sections.items()}
    payload["config_dict"] = vars(OmegaConf.create(to_original_targets(cfg)))
    torch.save(payload, path)
    return path


def tiny_train_config(tmp_path: Path, **train) -> Path:
    """Write the tiny training YAML (``train`` overrides its train: section) and return its path.

    Training starts from a random "release" file written next to it (see :func:`write_release`).
    """
    release = tmp_path / "tiny_release.bin"
    if not release.is_file():
        write_release(release)
    train = {"ckpt": str(release), **train}
    cfg = OmegaConf.merge(OmegaConf.load(TINY), OmegaConf.create(TRAIN_TINY), {"train": train})
    path = tmp_path / "train_tiny.yaml"
    OmegaConf.save(cfg, path)
    return path


def run_main(config: Path, out: Path, name: str = "run", *extra: str) -> int:
    """``python main.py`` in-process (a UserError propagates)."""
    import main

    torch.set_num_threads(1)
    return main.main(["--yaml_file", str(config), "--OUTPUT_ROOT", str(out), "--name", name, *extra])


def make_trainer(config: Path, out: Path, name: str = "run", *extra: str):
    """A Trainer built exactly as main.py builds it (single process)."""
    from ldm.config import load_config
    from runtime import distributed as D
    from training.options import apply_overrides, parse_args, resolve_options
    from training.trainer import Trainer

    cli = parse_args(["--yaml_file", str(config), "--OUTPUT_ROOT", str(out), "--name", name, *extra])
    cfg = apply_overrides(load_config(cli.yaml_file), cli.set)
    opts = resolve_options(cli, cfg)
    torch.set_num_threads(1)
    return Trainer(opts, cfg, D.init_distributed(opts.device))


def state_of(trainer) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of every part, cloned (keys ``part.<named_parameters name>``)."""
    return {f"{part}.{k}": v.detach().clone() for part, module in trainer.models.parts().items()
            for named in (module.named_parameters(), module.named_buffers()) for k, v in named}
