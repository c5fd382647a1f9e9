"""The model stack against the reference made with the original GLIGEN/DefFiller code."""
import json

from ldm.build import build_models
from ldm.config import load_config
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
