"""The model stack against the reference made with the original GLIGEN/DefFiller code."""
import json

import pytest

from ldm.build import build_models
from ldm.config import load_config
from runtime.errors import UserError
from tools.check_fixture import TOLERANCE, relative_errors

EXPECTED_OUTPUTS = {"eps", "grounding_tokens", "downsampled", "plms10_cfg3", "ddim10_cfg3", "ae_moments", "ae_decoded"}


def test_fixture_outputs_match_original(fixture_prefix):
    errors = relative_errors(fixture_prefix)
    assert set(errors) == EXPECTED_OUTPUTS
    bad = {k: v for k, v in errors.items() if not v <= TOLERANCE}
    assert not bad, f"outputs off the reference: {bad}"


def test_full_config_matches_official_key_manifest(shared_dir):
    manifest = json.loads((shared_dir / "fixtures" / "gligen_sem_keys.json").read_text())
    models = build_models(load_config("configs/sd_saliency_900.yaml"), device="meta")
    parts = models.parts()
    assert set(parts) == set(manifest)
    for name, module in parts.items():
        ours = {k: list(v.shape) for k, v in module.state_dict().items()}
        assert ours == manifest[name], f"{name}: names or shapes differ from the official checkpoint"


def test_meta_build_allocates_nothing():
    models = build_models(load_config("configs/sd_saliency_900.yaml"), device="meta")
    assert all(p.is_meta for p in models.model.parameters())
    n = sum(p.numel() for p in models.model.parameters())
    assert 850e6 < n < 1.2e9  # SD-1.x UNet (860M) + GLIGEN layers + mask encoder


ORIGINAL_STYLE = """
diffusion:
  target: ldm.models.diffusion.ldm.LatentDiffusion
  params: {linear_start: 0.00085, linear_end: 0.012, timesteps: 1000}
model:
  target: ldm.modules.diffusionmodules.openaimodel.UNetModel
  params:
    image_size: 32
    in_channels: 4
    out_channels: 4
    model_channels: 320
    attention_resolutions: [ 4, 2, 1 ]
    num_res_blocks: 2
    channel_mult: [ 1, 2, 4, 4 ]
    num_heads: 8
    transformer_depth: 1
    context_dim: 768
    fuser_type: gatedSA
    use_checkpoint: True
    grounding_downsampler:
      target: ldm.modules.diffusionmodules.sem_grounding_downsampler.GroundingDownsampler
      params: {in_dim: 152, resize_input: 128, out_dim: 8}
    grounding_tokenizer:
      target: ldm.modules.diffusionmodules.sem_grounding_net.PositionNet
      params: {in_dim: 152, resize_input: 256, out_dim: 768}
autoencoder:
  target: ldm.models.autoencoder.AutoencoderKL
  params:
    scale_factor: 0.18215
    embed_dim: 4
    ddconfig: {double_z: true, z_channels: 4, resolution: 256, in_channels: 3, out_ch: 3, ch: 128,
               ch_mult: [1, 2, 4, 4], num_res_blocks: 2, attn_resolutions: [], dropout: 0.0}
text_encoder:
  target: ldm.modules.encoders.modules.FrozenCLIPEmbedder
train_dataset_names:
  MVtecSemantic: {prob_use_caption: 1, image_size: 256, random_flip: True}
grounding_tokenizer_input:
  target: grounding_input.sem_grounding_tokinzer_input.GroundingNetInput
"""


def test_original_config_file_builds_the_same_model(tmp_path, shared_dir):
    path = tmp_path / "deffiller_original.yaml"
    path.write_text(ORIGINAL_STYLE)
    manifest = json.loads((shared_dir / "fixtures" / "gligen_sem_keys.json").read_text())
    models = build_models(load_config(path), device="meta")
    for name, module in models.parts().items():
        assert {k: list(v.shape) for k, v in module.state_dict().items()} == manifest[name]


def test_unknown_target_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  target: os.system\n  params: {}\n")
    with pytest.raises(UserError, match="unknown target 'os.system'"):
        build_models(load_config(path), device="meta")
