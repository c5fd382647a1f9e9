"""inference.export: the release file holds the EMA weights in half precision, its config and sampling settings,
loads strictly and drives infer.py without flags."""
import json

import pytest
import torch
from safetensors import safe_open

import infer
from inference.export import export_release
from inference.export import main as export_main
from ldm.checkpoint import load_models, model_sections, read_checkpoint, save_checkpoint
from runtime.errors import UserError
from tools.tiny_model import make_tiny_checkpoint, write_masks


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny checkpoint with an ``ema`` section that differs from its raw UNet weights."""
    root = tmp_path_factory.mktemp("export")
    plain = make_tiny_checkpoint(root / "plain.safetensors")
    models = load_models(plain)
    sections = model_sections(models)
    ema = {k: v + 0.25 for k, v in sections["model"].items() if v.is_floating_point()}
    path = save_checkpoint(root / "trained.safetensors", {**sections, "ema": ema}, models.config,
                           {"iteration": "7", "init": "random initialisation (--ckpt none)", "data_root": "/d",
                            "split": "/d/split.json", "split_sha256": "ab" * 32, "procedural": "false"})
    masks = root / "masks"
    write_masks(masks, ["In_1", "Pa_2"])
    return path, masks


def test_release_holds_half_precision_ema_weights_and_its_settings(trained, tmp_path):
    ckpt, _ = trained
    out = export_release(ckpt, tmp_path / "rel.safetensors", {"sampler": "ddim", "steps": 3, "guidance_scale": 2.5})
    assert not (tmp_path / "rel.yaml").exists()
    with safe_open(str(out), "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
        dtypes = {k: f.get_tensor(k).dtype for k in keys}
    assert not any(k.startswith("ema.") for k in keys)
    assert all(d == torch.float16 for k, d in dtypes.items() if k.startswith("model."))
    assert dtypes["diffusion.alphas_cumprod"] == torch.float32
    assert meta["weights"] == "ema" and meta["iteration"] == "7" and len(meta["source_sha256"]) == 64
    assert (meta["split_sha256"], meta["data_root"], meta["procedural"]) == ("ab" * 32, "/d", "false")  # provenance
    source = read_checkpoint(ckpt)
    released = read_checkpoint(out)
    name = next(iter(source.sections["ema"]))
    assert torch.allclose(released.sections["model"][name].float(), source.sections["ema"][name], atol=2e-3)
    assert not torch.allclose(released.sections["model"][name].float(), source.sections["model"][name], atol=0.1)
    assert dict(released.config.sampling) == {"sampler": "ddim", "steps": 3, "guidance_scale": 2.5}
    # the fp16 weights load into the fp32 model and match it closely
    a, b = load_models(out), load_models(ckpt, weights="ema")
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert p.dtype == torch.float32 and torch.allclose(p, q, atol=2e-3, rtol=1e-3), n


def test_a_release_re_exported_with_new_sampling_keeps_its_weights_and_origin(trained, tmp_path):
    ckpt, _ = trained
    first = export_release(ckpt, tmp_path / "a.safetensors", {"sampler": "ddim", "steps": 3})
    second = export_release(first, tmp_path / "b.safetensors", {"guidance_low": [1, 7]})
    a, b = read_checkpoint(first), read_checkpoint(second)
    assert all(torch.equal(a.sections["model"][k], b.sections["model"][k]) for k in a.sections["model"])
    assert dict(b.config.sampling) == {"sampler": "ddim", "steps": 3, "guidance_low": [1, 7]}
    for key in ("source_checkpoint", "source_sha256", "weights", "iteration", "split_sha256"):
        assert b.metadata[key] == a.metadata[key], key
    assert b.metadata["weights"] == "ema" and b.metadata["source_checkpoint"] == "trained.safetensors"
    from runtime.digest import file_sha256
    assert b.metadata["previous_release_sha256"] == file_sha256(first)


def test_infer_runs_the_release_with_no_flags_but_masks(trained, tmp_path):
    ckpt, masks = trained
    out = tmp_path / "rel.safetensors"
    assert export_main(["--ckpt", str(ckpt), "--out", str(out), "--sampling", "sampler=unipc", "steps=2",
                        "guidance_interval=[0,500]"]) == 0
    assert infer.main(["--ckpt", str(out), "--mask_dir", str(masks), "--out", str(tmp_path / "gen"),
                       "--device", "cpu"]) == 0
    settings = json.loads((tmp_path / "gen" / "generation.json").read_text())["settings"]
    assert (settings["sampler"], settings["steps"], settings["guidance_interval"]) == ("unipc", 2, [0, 500])


@pytest.mark.parametrize("args, message", [
    (["--sampling", "sampler=euler"], "section sampling"),
    (["--sampling", "guidance=2"], "--sampling guidance"),
    (["--max_mb", "0.01"], "over --max_mb"),
])
def test_bad_exports_are_one_line_and_leave_nothing(trained, tmp_path, args, message):
    ckpt, _ = trained
    out = tmp_path / "rel.safetensors"
    with pytest.raises(UserError, match=message) as err:
        export_main(["--ckpt", str(ckpt), "--out", str(out), *args])
    assert "\n" not in str(err.value) and not out.exists()


def test_export_refuses_to_overwrite_its_source(trained):
    ckpt, _ = trained
    with pytest.raises(UserError, match="being exported"):
        export_release(ckpt, ckpt)
