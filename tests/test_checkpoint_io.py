"""Checkpoint reading, strict loading, writing and the pickle safety net."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ldm.build import build_models
from ldm.checkpoint import CheckpointError, export_gligen, load_models, model_sections, read_checkpoint, save_checkpoint
from ldm.config import load_config, to_original_targets
from tools import check_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "assets" / "tiny.yaml"


@pytest.fixture(scope="module")
def tiny_cfg():
    return load_config(TINY)


@pytest.fixture(scope="module")
def tiny_sections(tiny_cfg):
    torch.manual_seed(0)
    models = build_models(tiny_cfg)
    # random, non-trivial weights everywhere (fresh init has zeros in many places); the schedule buffers
    # stay those of the config's schedule (loading refuses a checkpoint of another schedule)
    return {part: {k: (torch.randn_like(v) if v.is_floating_point() and part != "diffusion" else v)
                   for k, v in sd.items()}
            for part, sd in model_sections(models).items()}


def write_official(path, sections, cfg, drop=None, reshape=None):
    """A file in the official GLIGEN-sem release layout: torch pickle + vars(DictConfig)."""
    payload = {part: dict(sd) for part, sd in sections.items()}
    if drop:
        part, key = drop
        del payload[part][key]
    if reshape:
        part, key = reshape
        payload[part][key] = torch.zeros(3, 3)
    payload["config_dict"] = vars(OmegaConf.create(to_original_targets(cfg)))
    torch.save(payload, path)
    return path


def run_tool(monkeypatch, capsys, *argv):
    monkeypatch.setattr(sys, "argv", ["check_checkpoint.py", *map(str, argv)])
    code = check_checkpoint.main()
    return code, capsys.readouterr()


def test_official_layout_loads_strictly(tmp_path, tiny_cfg, tiny_sections):
    path = write_official(tmp_path / "official.bin", tiny_sections, tiny_cfg)
    ckpt = read_checkpoint(path)
    assert ckpt.kind == "gligen"
    assert ckpt.config.model.target == "ldm.modules.diffusionmodules.openaimodel.UNetModel"
    models = load_models(path)
    for part, module in models.parts().items():
        for key, value in module.state_dict().items():
            assert torch.equal(value, tiny_sections[part][key]), f"{part}.{key} not loaded"


def test_check_checkpoint_cli_ok(tmp_path, monkeypatch, capsys, tiny_cfg, tiny_sections):
    path = write_official(tmp_path / "official.bin", tiny_sections, tiny_cfg)
    code, out = run_tool(monkeypatch, capsys, path)
    assert code == 0, out.err
    lines = [line for line in out.out.splitlines() if line.strip().endswith("ok")]
    assert [line.split()[0] for line in lines] == ["model", "autoencoder", "text_encoder", "diffusion"]


def test_missing_key_is_named(tmp_path, monkeypatch, capsys, tiny_cfg, tiny_sections):
    key = "input_blocks.1.1.transformer_blocks.0.fuser.alpha_attn"
    path = write_official(tmp_path / "missing.bin", tiny_sections, tiny_cfg, drop=("model", key))
    code, out = run_tool(monkeypatch, capsys, path)
    assert code == 1
    assert f"1 missing: model.{key}" in out.out
    assert len(out.out.strip().splitlines()) == 1


def test_wrong_shape_is_named(tmp_path, monkeypatch, capsys, tiny_cfg, tiny_sections):
    key = "position_net.linears.0.weight"
    path = write_official(tmp_path / "shape.bin", tiny_sections, tiny_cfg, reshape=("model", key))
    code, out = run_tool(monkeypatch, capsys, path)
    assert code == 1
    assert f"wrong shape: model.{key} [3, 3]" in out.out


def test_other_architecture_is_refused(tmp_path, tiny_sections):
    path = write_official(tmp_path / "tiny.bin", tiny_sections, load_config(TINY))
    with pytest.raises(CheckpointError, match="does not fit the configured architecture"):
        load_models(path, config=REPO / "configs" / "sd_saliency_900.yaml", parts=("model",))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_running_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    torch.save({"model": {"w": torch.zeros(1)}, "config_dict": _Payload(marker)}, path)
    out = subprocess.run([sys.executable, str(REPO / "tools" / "check_checkpoint.py"), str(path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: refusing to unpickle") and "system" in err[0]
    assert not marker.exists()


def test_own_format_round_trip_and_export(tmp_path, tiny_cfg, tiny_sections):
    ours = save_checkpoint(tmp_path / "ckpt.safetensors", tiny_sections, tiny_cfg, {"iteration": 7})
    assert ours.with_suffix(".yaml").is_file()
    back = read_checkpoint(ours)
    assert back.kind == "deffiller" and back.metadata["iteration"] == "7"
    models = load_models(ours)
    assert torch.equal(models.model.state_dict()["out.2.weight"], tiny_sections["model"]["out.2.weight"])
    exported = export_gligen(tmp_path / "export.pth", model_sections(models), models.config)
    again = read_checkpoint(exported)  # weights_only, like the official file
    assert again.kind == "gligen"
    assert again.config.model.target == "ldm.modules.diffusionmodules.openaimodel.UNetModel"
    for part, sd in tiny_sections.items():
        assert set(again.sections[part]) == set(sd)
        assert all(torch.equal(again.sections[part][k], v) for k, v in sd.items())


def test_sd_ckpt_widens_first_conv(tmp_path, tiny_cfg, tiny_sections):
    state = {}
    for key, value in tiny_sections["model"].items():
        if key.startswith(("position_net.", "downsample_net.")) or ".fuser." in key:
            continue
        if key == "input_blocks.0.0.weight":
            value = value[:, :4].clone()
        state["model.diffusion_model." + key] = value
    state.update({"first_stage_model." + k: v for k, v in tiny_sections["autoencoder"].items()})
    state.update({"cond_stage_model." + k: v for k, v in tiny_sections["text_encoder"].items()})
    state["model_ema.decay"] = torch.tensor(0.999)
    torch.save({"state_dict": state, "global_step": 470000}, tmp_path / "sd.ckpt")
    models = load_models(tmp_path / "sd.ckpt", config=TINY)
    w = models.model.state_dict()["input_blocks.0.0.weight"]
    assert torch.equal(w[:, :4], tiny_sections["model"]["input_blocks.0.0.weight"][:, :4])
    assert torch.count_nonzero(w[:, 4:]) == 0
    gates = [v for k, v in models.model.state_dict().items() if k.endswith("alpha_attn")]
    assert gates and all(float(g) == 0.0 for g in gates)  # new GLIGEN layers keep their init


def test_current_transformers_text_names_accepted(tmp_path, tiny_cfg, tiny_sections):
    sections = dict(tiny_sections)
    sections["text_encoder"] = {k.replace("transformer.text_model.", "transformer."): v
                                for k, v in tiny_sections["text_encoder"].items() if not k.endswith("position_ids")}
    path = save_checkpoint(tmp_path / "new_names.safetensors", sections, tiny_cfg)
    models = load_models(path)
    key = "transformer.text_model.final_layer_norm.weight"
    assert torch.equal(models.text_encoder.state_dict()[key], tiny_sections["text_encoder"][key])


def test_interrupted_write_keeps_previous_checkpoint(tmp_path, monkeypatch, tiny_cfg, tiny_sections):
    path = save_checkpoint(tmp_path / "latest.safetensors", tiny_sections, tiny_cfg, {"iteration": 1})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, tiny_sections, tiny_cfg, {"iteration": 2})
    monkeypatch.undo()
    assert read_checkpoint(path).metadata["iteration"] == "1"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.bin")
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="safetensors"):
        read_checkpoint(bad_st)


def test_ema_weights_are_used_when_present(tmp_path, tiny_cfg, tiny_sections):
    name = next(k for k in tiny_sections["model"] if ".fuser." in k)
    ema = {name: tiny_sections["model"][name] + 1.0}
    ours = save_checkpoint(tmp_path / "ema.safetensors", {**tiny_sections, "ema": ema}, tiny_cfg)
    official = write_official(tmp_path / "gligen.pth", tiny_sections, tiny_cfg)
    payload = torch.load(official, weights_only=False)
    payload["ema"] = {**tiny_sections["model"], **ema}  # GLIGEN keeps a whole averaged UNet
    torch.save(payload, official)
    for path in (ours, official):
        auto = load_models(path, weights="auto")
        raw = load_models(path, weights="raw")
        assert auto.extra["weights"] == "ema" and raw.extra["weights"] == "raw"
        torch.testing.assert_close(auto.model.state_dict()[name], ema[name])
        torch.testing.assert_close(raw.model.state_dict()[name], tiny_sections["model"][name])
    plain = save_checkpoint(tmp_path / "plain.safetensors", tiny_sections, tiny_cfg)
    assert load_models(plain, weights="auto").extra["weights"] == "raw"
    with pytest.raises(CheckpointError, match="no EMA weights"):
        load_models(plain, weights="ema")


def test_one_file_digest(tmp_path):
    """runtime.digest.file_sha256 is the one file digest (ldm.checkpoint hands the same function on)."""
    import hashlib
    import re

    from ldm import checkpoint
    from runtime import digest

    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(3 << 20))
    assert digest.file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert checkpoint.file_sha256 is digest.file_sha256
    skip = {".venv", "tests", "OUTPUT", "DATA", "models", "docs", ".git"}
    hashing_files = re.compile(r"def file_sha256|sha\w*\([^)]*read_bytes\(\)")
    places = [str(p.relative_to(REPO)) for p in REPO.rglob("*.py")
              if not skip & set(p.relative_to(REPO).parts[:1]) and hashing_files.search(p.read_text(encoding="utf-8"))]
    assert places == ["runtime/digest.py"], places
