"""Checkpoint I/O: every format DefFiller users meet, one module.

Reads
  (a) the official GLIGEN-sem release (``diffusion_pytorch_model.bin``: a torch pickle of ``model``,
      ``autoencoder``, ``text_encoder``, ``diffusion`` and an OmegaConf ``config_dict``),
  (b) DefFiller/GLIGEN training checkpoints (the same plus ``opt``, ``scheduler``, ``iters``),
  (c) an original SD-1.x ``.ckpt`` (``state_dict`` with ``model.diffusion_model.`` /
      ``first_stage_model.`` / ``cond_stage_model.`` prefixes; the first conv is widened with zero
      weights for the downsampler channels and the new GLIGEN layers keep their fresh init),
  (d) our own format: one ``.safetensors`` file (tensors named ``<part>.<param>``, the YAML config in
      its metadata) plus a readable ``.yaml`` next to it.
Writes (d), and exports back to the GLIGEN ``.pth`` layout. All writes are atomic.

Pickles are untrusted: they are read with ``weights_only=True``, allowing only tensors, plain
containers and the OmegaConf classes the official files need. Anything else is refused unless the
caller explicitly opts in (``allow_unsafe_pickle``).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional, Union

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save_bytes
from torch import nn

from ldm.build import DefFillerModels, build_models
from ldm.config import PARTS, config_from_mapping, config_from_text, instantiate, to_original_targets
from ldm.diffusion.schedule import BUFFER_NAMES
from ldm.modules.unet import is_gligen_layer
from runtime.atomic import write_bytes_atomic, write_text_atomic
from runtime.digest import file_sha256  # noqa: F401  (re-exported)
from runtime.errors import UserError
from runtime.safe_load import SAFE_GLOBALS, safe_torch_load  # noqa: F401  (SAFE_GLOBALS re-exported)

FORMAT_NAME = "deffiller"
FORMAT_VERSION = "1"
FIRST_CONV = "input_blocks.0.0.weight"
POSITION_IDS = "transformer.text_model.embeddings.position_ids"
WEIGHTLESS_TARGETS = ("ldm.modules.identity_autoencoder.IdentityAutoencoder",)
#: metadata naming the data a checkpoint was trained on (written by training, kept by inference.export)
PROVENANCE_KEYS = ("data_root", "split", "split_sha256", "procedural", "teacher_sha256", "teacher_guidance")


class CheckpointError(UserError):
    """A checkpoint that cannot be read or does not fit the model."""


@dataclass
class Checkpoint:
    """Tensors per part (original GLIGEN names), the config if the file carries one, and the rest."""

    path: Path
    kind: str                                   # "deffiller" | "gligen" | "sd"
    sections: dict[str, dict[str, torch.Tensor]]
    config: Optional[DictConfig] = None
    training_state: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)


# -- reading ------------------------------------------------------------------------------------
def _torch_load(path: Path, allow_unsafe_pickle: bool, unsafe_flag: Optional[str] = None):
    try:
        return safe_torch_load(path, "checkpoint", "use a .safetensors checkpoint written by main.py or the "
                               "original release file", unsafe_flag=unsafe_flag, allow_unsafe=allow_unsafe_pickle)
    except UserError as exc:
        raise CheckpointError(str(exc)) from None


def _config_from_pickle(config_dict, path: Path) -> Optional[DictConfig]:
    """``vars()`` of a DictConfig (as GLIGEN saves it) or a plain dict -> DictConfig (one line if malformed)."""
    if config_dict is None:
        return None
    where = f"{path} config_dict"
    if isinstance(config_dict, dict) and "_content" in config_dict:
        try:
            cfg = DictConfig(content={})
            cfg.__dict__.update(config_dict)
            config_dict = OmegaConf.to_container(cfg)
        except Exception as exc:  # a malformed OmegaConf object can fail in many ways
            raise CheckpointError(f"{where}: the embedded config is malformed ({type(exc).__name__}); "
                                  "pass a config with --config") from None
    if isinstance(config_dict, (dict, DictConfig)):
        return config_from_mapping(config_dict, where)
    return None


def _split_sd(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """SD-1.x ``state_dict`` -> our parts (EMA copies and training-only entries are dropped)."""
    sections: dict[str, dict[str, torch.Tensor]] = {p: {} for p in PARTS}
    prefixes = {"model.diffusion_model.": "model", "first_stage_model.": "autoencoder",
                "cond_stage_model.": "text_encoder"}
    for key, value in state.items():
        for prefix, part in prefixes.items():
            if key.startswith(prefix):
                sections[part][key[len(prefix):]] = value
                break
        else:
            if key in BUFFER_NAMES:
                sections["diffusion"][key] = value
    return {k: v for k, v in sections.items() if v}


def read_checkpoint(path: Union[str, Path], allow_unsafe_pickle: bool = False,
                    unsafe_flag: Optional[str] = None) -> Checkpoint:
    """Read any supported checkpoint format (see the module docstring).

    ``unsafe_flag``: the calling command's flag for ``allow_unsafe_pickle``, named in the refusal.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        obj = _torch_load(path, allow_unsafe_pickle, unsafe_flag)
    except UserError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint dictionary")
    if "model" in obj and isinstance(obj["model"], dict):
        sections = {p: dict(obj[p]) for p in PARTS if isinstance(obj.get(p), dict)}
        rest = {k: v for k, v in obj.items() if k not in PARTS and k != "config_dict"}
        kind = "gligen"
        return Checkpoint(path, kind, sections, _config_from_pickle(obj.get("config_dict"), path), rest)
    state = obj.get("state_dict", obj)
    if isinstance(state, dict) and any(k.startswith("model.diffusion_model.") for k in state):
        return Checkpoint(path, "sd", _split_sd(state))
    raise CheckpointError(f"{path} is neither a GLIGEN/DefFiller checkpoint (keys model, autoencoder, ...) "
                          "nor an SD-1.x .ckpt (state_dict with model.diffusion_model.*)")


def read_metadata(path: Union[str, Path]) -> dict[str, str]:
    """The metadata of one of our ``.safetensors`` files without reading its tensors ({} for other formats)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return {}
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None


def group_sections(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``{"model.w": t}`` as ``{"model": {"w": t}}``: a file's flat keys grouped by their first component."""
    sections: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        part, _, name = key.partition(".")
        sections.setdefault(part, {})[name] = value
    return sections


def _read_safetensors(path: Path) -> Checkpoint:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None
    sections = group_sections(tensors)
    config = config_from_text(metadata.pop("config"), f"{path} metadata") if "config" in metadata else None
    sidecar = path.with_suffix(".yaml")
    if config is None and sidecar.is_file():
        config = config_from_text(sidecar.read_text(encoding="utf-8", errors="replace"), f"{sidecar}")
    return Checkpoint(path, FORMAT_NAME, sections, config, metadata=metadata)


# -- fitting a checkpoint to the models -----------------------------------------------------------
def _normalise_text_names(section: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Current-transformers names (``transformer.embeddings…``) -> the legacy ones we store."""
    out = {}
    for key, value in section.items():
        if key.startswith("transformer.") and not key.startswith("transformer.text_model."):
            key = "transformer.text_model." + key[len("transformer."):]
        out[key] = value
    return out


def _widen_first_conv(section: dict[str, torch.Tensor], expected: torch.Size) -> None:
    """SD's 4-channel first conv -> ours with zero weights for the extra (downsampler) channels."""
    w = section.get(FIRST_CONV)
    if w is not None and w.dim() == 4 and w.shape[1] < expected[1] and w.shape[0] == expected[0]:
        wide = torch.zeros(expected, dtype=w.dtype)
        wide[:, : w.shape[1]] = w
        section[FIRST_CONV] = wide


def fit_sections(models: DefFillerModels, ckpt: Checkpoint) -> dict[str, dict[str, torch.Tensor]]:
    """Check every tensor against the models; return per-part state dicts ready to load.

    Raises :class:`CheckpointError` naming (up to 10) missing, unexpected and mis-shaped tensors.
    An SD-1.x file may lack the GLIGEN layers (they keep their initialisation); nothing else may.
    """
    missing, unexpected, wrong = [], [], []
    fitted = {}
    for part, module in models.parts().items():
        expected = module.state_dict()
        given = dict(ckpt.sections.get(part, {}))
        if part == "text_encoder":
            given = _normalise_text_names(given)
            if POSITION_IDS in expected and POSITION_IDS not in given:
                given[POSITION_IDS] = expected[POSITION_IDS]
        if part == "model" and ckpt.kind == "sd":
            _widen_first_conv(given, expected[FIRST_CONV].shape)
            for key in expected:
                if key not in given and is_gligen_layer(key):
                    given[key] = expected[key]
        if part == "diffusion" and not given:
            given = dict(expected)  # schedule buffers are recomputed from the config
        missing += [f"{part}.{k}" for k in expected if k not in given]
        unexpected += [f"{part}.{k}" for k in given if k not in expected]
        wrong += [f"{part}.{k} {list(given[k].shape)} vs model {list(v.shape)}"
                  for k, v in expected.items() if k in given and given[k].shape != v.shape]
        fitted[part] = given
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if names:
            problems.append(f"{len(names)} {label}: " + ", ".join(names[:10]) + (" ..." if len(names) > 10 else ""))
    if problems:
        raise CheckpointError(f"{ckpt.path} does not fit the configured architecture: " + "; ".join(problems)
                              + " — is it a checkpoint of another model, or is --config wrong?")
    return fitted


def load_into(models: DefFillerModels, ckpt: Checkpoint) -> DefFillerModels:
    """Strictly load ``ckpt`` into ``models`` (in place)."""
    for part, state in fit_sections(models, ckpt).items():
        models.parts()[part].load_state_dict(state, strict=True)
    models.extra.update(ckpt.training_state)
    return models


WEIGHT_CHOICES = ("auto", "ema", "raw")


def ema_section(ckpt: Checkpoint) -> Optional[dict[str, torch.Tensor]]:
    """EMA weights of the UNet a training checkpoint carries, or ``None``.

    Ours hold the trained parameters' averages in section ``ema``; GLIGEN/DefFiller training
    checkpoints hold a whole averaged UNet under the key ``ema``. Both use the UNet's names.
    """
    ema = ckpt.sections.get("ema")
    if ema is None and isinstance(ckpt.training_state.get("ema"), dict):
        ema = ckpt.training_state["ema"]
    return dict(ema) if ema else None


def apply_weights_choice(ckpt: Checkpoint, weights: str = "auto") -> str:
    """Overlay the EMA weights on the UNet section when asked (``ema``) or present (``auto``).

    Returns what was used, ``ema`` or ``raw``. ``ema`` on a checkpoint without EMA weights is an
    error naming the file.
    """
    if weights not in WEIGHT_CHOICES:
        raise CheckpointError(f"weights must be one of {', '.join(WEIGHT_CHOICES)}, got {weights!r}")
    ema = ema_section(ckpt) if weights != "raw" else None
    if ema is None:
        if weights == "ema":
            raise CheckpointError(f"{ckpt.path} has no EMA weights (train with --enable_ema true, "
                                  "or use --weights raw)")
        return "raw"
    model = ckpt.sections.get("model", {})
    unknown = [k for k in ema if k not in model]
    if unknown:
        raise CheckpointError(f"{ckpt.path}: {len(unknown)} EMA tensor(s) are not UNet parameters "
                              f"(e.g. {unknown[0]}); use --weights raw")
    ckpt.sections["model"] = {**model, **{k: v.to(model[k].dtype) for k, v in ema.items()}}
    return "ema"


def load_models(path: Union[str, Path], config: Optional[Union[DictConfig, str, Path]] = None,
                parts: Iterable[str] = PARTS, device: Union[str, torch.device] = "cpu",
                allow_unsafe_pickle: bool = False, weights: str = "raw") -> DefFillerModels:
    """Read a checkpoint, build the models its config (or ``config``) describes, load strictly.

    ``weights``: ``raw`` (the trained weights), ``ema`` (their moving average, which must be
    present) or ``auto`` (EMA when the checkpoint has it); ``models.extra["weights"]`` says which.
    """
    ckpt = read_checkpoint(path, allow_unsafe_pickle)
    used = apply_weights_choice(ckpt, weights)
    models = models_from_checkpoint(ckpt, config, parts, device)
    models.extra["weights"] = used
    return models


def models_from_checkpoint(ckpt: Checkpoint, config: Optional[Union[DictConfig, str, Path]] = None,
                           parts: Iterable[str] = PARTS,
                           device: Union[str, torch.device] = "cpu") -> DefFillerModels:
    """Build the models the checkpoint's config (or ``config``) describes and load ``ckpt`` strictly."""
    from ldm.config import load_config

    path = ckpt.path
    if config is not None and not isinstance(config, DictConfig):
        config = load_config(config)
    cfg = config if config is not None else ckpt.config
    if cfg is None:
        raise CheckpointError(f"{path} carries no config; pass one with --config (e.g. configs/sd_saliency_900.yaml)")
    if "upscaler" in ckpt.sections and "upscaler" not in cfg and "upscaler" in (ckpt.config or {}):
        cfg = OmegaConf.merge(cfg, {"upscaler": ckpt.config.upscaler})  # a given config keeps the embedded upscaler
    # parts without weights (the pixel-space IdentityAutoencoder) have no section but are still built
    parts = [p for p in parts if p in PARTS and (p in ("model", "diffusion") or p in ckpt.sections
                                                 or (p in cfg and cfg[p].get("target") in WEIGHTLESS_TARGETS))]
    fit_sections(build_models(cfg, parts=parts, device="meta"), ckpt)  # refuse a mismatch before allocating
    check_diffusion(cfg, ckpt)
    models = build_models(cfg, parts=parts)
    load_into(models, ckpt)
    models.extra["checkpoint_kind"] = ckpt.kind
    models.extra["checkpoint_path"] = str(path)
    models.extra["metadata"] = dict(ckpt.metadata)
    return models.to(device).eval()


def upscaler_label(path: Union[str, Path]) -> str:
    """How records name an upscaler file: its name and the start of its SHA-256."""
    return f"{Path(path).name} sha256 {file_sha256(path)[:16]}"


def read_upscaler(path: Union[str, Path], side: Optional[int] = None) -> nn.Module:
    """The mask-guided upscaler of a file with an ``upscaler`` section and config (``python -m training.upscaler``,
    or a release file that embeds one), loaded strictly on the CPU in eval mode; with ``side``, refused unless it
    was trained for a generator of that side."""
    ckpt = read_checkpoint(path)
    cfg = ckpt.config
    if "upscaler" not in ckpt.sections or cfg is None or "upscaler" not in cfg:
        raise CheckpointError(f"{path} holds no mask-guided upscaler; write one with python -m training.upscaler")
    try:
        module = instantiate(cfg.upscaler)
        module.load_state_dict({k: v.float() for k, v in ckpt.sections["upscaler"].items()}, strict=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: its upscaler does not fit its config ({' '.join(str(exc).split())[:160]}); "
                              "write it again with python -m training.upscaler") from None
    if side is not None and module.side != side:
        raise CheckpointError(f"{path} was trained for a {module.side} px generator, this one draws {side} px; train "
                              f"one with python -m training.upscaler --side {side}")
    return module.eval()


PROCESS_KEYS = ("parameterization", "zero_terminal_snr", "snr_shift", "offset_noise", "uncond_drop")


def check_diffusion(cfg: DictConfig, ckpt: Checkpoint) -> None:
    """Refuse a config whose diffusion process differs from the one the checkpoint was trained with: its
    schedule (the ``alphas_cumprod`` the checkpoint stores) or what its model predicts and was trained on."""
    process = instantiate(cfg["diffusion"])
    given = ckpt.sections.get("diffusion", {}).get("alphas_cumprod")
    if given is not None and not torch.allclose(given.float(), process.alphas_cumprod, rtol=1e-4, atol=1e-7):
        raise CheckpointError(f"{ckpt.path} was trained with another noise schedule than the config's diffusion "
                              f"part (zero_terminal_snr {process.zero_terminal_snr}, snr_shift {process.snr_shift:g}, "
                              f"alphas_cumprod[-1] "
                              f"{float(given[-1]):.3g} vs {float(process.alphas_cumprod[-1]):.3g}); use the "
                              "checkpoint's own config (leave out --config)")
    saved = (ckpt.config or {}).get("diffusion", {}) or {}
    saved = instantiate(saved) if "target" in saved else None
    for key in PROCESS_KEYS if saved is not None else ():
        if getattr(saved, key) != getattr(process, key):
            raise CheckpointError(f"{ckpt.path} was trained with diffusion {key} {getattr(saved, key)!r} but the "
                                  f"config says {getattr(process, key)!r}; use the checkpoint's own config "
                                  "(leave out --config)")


# -- writing ------------------------------------------------------------------------------------
def model_sections(models: DefFillerModels, parts: Iterable[str] = PARTS) -> dict[str, dict[str, torch.Tensor]]:
    """State dicts of the parts (original names), for saving."""
    available = models.parts()
    return {p: available[p].state_dict() for p in parts if p in available}


def save_checkpoint(path: Union[str, Path], sections: Mapping[str, Mapping[str, torch.Tensor]],
                    config: Union[DictConfig, dict], metadata: Optional[Mapping[str, str]] = None,
                    sidecar: bool = True) -> Path:
    """Write our format: ``path`` (.safetensors, config in its metadata) and (``sidecar``) ``path.yaml``,
    atomically."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise UserError(f"{path}: our checkpoints are .safetensors files")
    flat = {f"{part}.{k}": v.detach().contiguous().cpu() for part, sd in sections.items() for k, v in sd.items()}
    yaml_text = OmegaConf.to_yaml(OmegaConf.create(config) if isinstance(config, dict) else config)
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": yaml_text}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    write_bytes_atomic(st_save_bytes(flat, metadata=meta), path)
    if sidecar:
        write_text_atomic(yaml_text, path.with_suffix(".yaml"))
    return path


def export_gligen(path: Union[str, Path], sections: Mapping[str, Mapping[str, torch.Tensor]],
                  config: Union[DictConfig, dict]) -> Path:
    """Write the GLIGEN ``.pth`` layout the original code loads (its class paths in ``config_dict``)."""
    path = Path(path)
    original_cfg = OmegaConf.create(to_original_targets(config))
    payload = {part: {k: v.detach().cpu() for k, v in sections[part].items()} for part in PARTS if part in sections}
    payload["config_dict"] = vars(original_cfg)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes_atomic(buffer.getvalue(), path)
    return path
