"""The generator committed under models/: a release file that infer.py runs with masks alone."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

import infer

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "sd900_vpred.safetensors"
DISTILLED = SHIPPED.with_name("sd900_vpred_distilled.safetensors")
pytestmark = pytest.mark.skipif(not (SHIPPED.exists() and DISTILLED.exists()),
                                reason=f"{SHIPPED} or {DISTILLED.name} not in this checkout")


def test_release_is_small_half_precision_and_names_its_training_split():
    assert SHIPPED.stat().st_size <= 32 * 2**20
    with safe_open(str(SHIPPED), "pt") as f:
        meta = f.metadata()
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys() if not k.startswith("diffusion.")}
        assert any(k.startswith("upscaler.") for k in f.keys())
    assert meta["format"] == "deffiller" and meta["weights"] == "ema" and dtypes <= {"F16", "I64"}
    assert meta["split"].endswith("SD-saliency-900_9-1_seed0.json") and meta["init"].startswith("random")
    assert "parameterization: v" in meta["config"] and "zero_terminal_snr: true" in meta["config"]
    assert "sampling:\n  sampler: unipc\n  steps: 20\n  guidance_scale: 3.0" in meta["config"]


def test_distilled_release_names_its_teacher_and_samples_unguided():
    from runtime.digest import file_sha256

    assert DISTILLED.stat().st_size <= 32 * 2**20
    with safe_open(str(DISTILLED), "pt") as f:
        meta = f.metadata()
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys() if not k.startswith("diffusion.")}
    assert meta["format"] == "deffiller" and meta["weights"] == "ema" and dtypes <= {"F16", "I64"}
    assert meta["split"].endswith("SD-saliency-900_9-1_seed0.json")
    with safe_open(str(SHIPPED), "pt") as f:  # the teacher: the guided file, or the release it was re-exported from
        teachers = {file_sha256(SHIPPED), f.metadata().get("previous_release_sha256")}
    assert meta["teacher_sha256"] in teachers and meta["init"].startswith("models/sd900_vpred.safetensors")
    assert meta["teacher_guidance"] == "guidance 3, low frequencies (box 5) 1"
    assert "sampling:\n  sampler: unipc\n  steps: 20\n  guidance_scale: 1.0" in meta["config"]


def _mask(path: Path, box: tuple[int, int, int, int]) -> None:
    m = np.zeros((200, 200), np.uint8)
    m[box[1]:box[3], box[0]:box[2]] = 255
    Image.fromarray(m).save(path)


@pytest.mark.parametrize("release, guidance", [(SHIPPED, 3.0), (DISTILLED, 1.0)], ids=["shipped", "distilled"])
def test_infer_draws_grey_steel_with_the_defect_where_the_mask_is(tmp_path, release, guidance):
    masks = tmp_path / "masks"
    masks.mkdir()
    _mask(masks / "Sc_1.png", (95, 10, 105, 190))   # a vertical scratch: bright in SD-Saliency-900
    _mask(masks / "In_1.png", (60, 60, 140, 140))   # an inclusion: dark
    out = tmp_path / "gen"
    assert infer.main(["--ckpt", str(release), "--mask_dir", str(masks), "--out", str(out), "--device", "cpu",
                       "--steps", "10", "--output_size", "200"]) == 0
    settings = json.loads((out / "generation.json").read_text())["settings"]
    assert (settings["sampler"], settings["guidance_scale"]) == ("unipc", guidance)
    assert settings["upscaler"].startswith("embedded: ups810.safetensors sha256 ")  # the embedded mask-guided upscaler
    images = {p.stem: np.asarray(Image.open(p).convert("L"), np.float32) / 255
              for p in (out / "Source_Images").glob("*.png")}
    assert set(images) == {"Sc_1", "In_1"}
    for stem, img in images.items():
        mask = np.asarray(Image.open(masks / f"{stem}.png")) > 127
        inside, outside = img[mask].mean(), img[~mask].mean()
        assert 0.1 < outside < 0.9 and img.std() > 0.01
        assert (inside > outside) if stem.startswith("Sc") else (inside < outside), (stem, inside, outside)


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_without_bf16_units_warns_to_use_fp32(monkeypatch, native):
    import warnings

    import inference.generate as generate

    monkeypatch.setattr(generate, "cpu_has_bf16", lambda: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        generate.load_pipeline(SHIPPED, device="cpu", precision="bf16")
    said = [str(w.message) for w in caught if "bfloat16 units" in str(w.message)]
    assert len(said) == (0 if native else 1)
    if said:
        assert "use --precision fp32" in said[0] and "\n" not in said[0]
