"""evaluation.study.preflight on its own: the dataset folder check, the initial-weights messages, and every
problem of a study config reported at once (one line each) before anything runs."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_study import write_tiny_study

from evaluation.study import preflight
from evaluation.study.config import load_study_config
from evaluation.study.context import Ctx
from evaluation.study.stamps import StampStore
from runtime.errors import UserError
from training.options import DEFAULT_CKPT, RELEASE_URL


def test_check_data_root(tmp_path):
    with pytest.raises(UserError, match="dataset folder not found"):
        preflight.check_data_root(str(tmp_path / "missing"))
    (tmp_path / "Source Images").mkdir()
    with pytest.raises(UserError, match=r"no mask folder \(Ground truth or Ground_truth\)"):
        preflight.check_data_root(str(tmp_path))
    (tmp_path / "Ground_truth").mkdir()  # either spelling of either folder
    preflight.check_data_root(str(tmp_path))
    (tmp_path / "Source Images").rmdir()
    with pytest.raises(UserError, match="no image folder"):
        preflight.check_data_root(str(tmp_path))


def test_weights_exist(tmp_path):
    preflight._weights_exist(None, "g", "here")  # no initial weights: nothing to check
    (tmp_path / "w.bin").write_bytes(b"x")
    preflight._weights_exist(str(tmp_path / "w.bin"), "g", "here")
    with pytest.raises(UserError) as exc:
        preflight._weights_exist(str(tmp_path / Path(DEFAULT_CKPT).name), "studies.x.generator", "gen.yaml")
    assert RELEASE_URL in str(exc.value) and "studies.x.generator" in str(exc.value)
    with pytest.raises(UserError, match="change train.ckpt"):
        preflight._weights_exist(str(tmp_path / "other.bin"), "g", "gen.yaml")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_study(tmp_path_factory.mktemp("preflight"))


def context(config: Path, *overrides: str) -> Ctx:
    cfg = load_study_config(str(config), list(overrides))
    return Ctx(cfg, StampStore(cfg["out"]), log=lambda _: None)


def test_a_ready_study_has_no_problem(tiny):
    assert preflight.preflight(context(tiny)) == []
    assert preflight.inception_note(context(tiny)) == "FID/KID: off (fidelity.fid: false)"


def test_every_problem_is_listed_at_once(tiny, tmp_path):
    missing_weights = tmp_path / "weights" / "missing.bin"
    errors = preflight.preflight(context(
        tiny, f"data_root={tmp_path / 'no_data'}",
        f"studies.substitution.generation.mask_dir={tmp_path / 'no_masks'}",
        f"studies.substitution.generator.set=[train.ckpt={missing_weights}]"))
    assert len(errors) == 3, errors
    assert all("\n" not in e for e in errors)
    assert "dataset folder not found" in errors[0]
    assert any(f"{missing_weights}: initial weights of studies.substitution.generator not found" in e for e in errors)
    assert any("generation.mask_dir" in e and "folder not found" in e for e in errors)


def test_weights_are_not_needed_once_the_run_has_a_checkpoint(tiny, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    missing = [f"studies.substitution.generator.set=[train.ckpt={tmp_path / 'missing.bin'}]",
               f"studies.substitution.generator.run={run}", "studies.expansion.enabled=false"]
    assert len(preflight.preflight(context(tiny, *missing))) == 1
    (run / "latest.json").write_text('{"weights": "checkpoints/w.safetensors", "iteration": 5}')
    assert preflight.preflight(context(tiny, *missing)) == []


def test_a_bad_maskgen_config_is_reported(tiny, tmp_path):
    bad = tmp_path / "maskgen.yaml"
    cfg = yaml.safe_load((tiny.parent / "maskgen.yaml").read_text())
    cfg["train"]["epochs"] = 0
    bad.write_text(yaml.safe_dump(cfg))
    errors = preflight.preflight(context(tiny, f"studies.expansion.maskgen.config={bad}"))
    assert len(errors) == 1 and "maskgen config" in errors[0], errors


def test_plan_refuses_initial_weights_without_provenance(tiny, tmp_path):
    """--plan reports what the generator stage would refuse: initial weights that name no training data, or a
    split whose training side holds the study's test items; nothing is checked before the split exists."""
    import torch
    from safetensors.torch import save_file

    from dataset.pairs import find_pairs
    from dataset.splits import save_split
    from runtime.digest import file_sha256

    stems = sorted(p.stem for p in find_pairs(str(tiny.parent / "data"), check_sizes=False))
    split = tmp_path / "split.json"
    bare = tmp_path / "bare.safetensors"
    save_file({"model.x": torch.zeros(1)}, str(bare))
    flags = [f"studies.substitution.split={split}", f"studies.substitution.generator.set=[train.ckpt={bare}]",
             f"studies.substitution.generator.run={tmp_path / 'run'}", "studies.expansion.enabled=false"]
    assert preflight.preflight(context(tiny, *flags)) == []  # the split is made by the first run
    save_split({"train": stems[3:], "test": stems[:3], "seed": 0, "test_fraction": 0.25}, split)
    errors = preflight.preflight(context(tiny, *flags))
    assert len(errors) == 1 and "bare.safetensors names no provenance" in errors[0], errors
    leaky = save_split({"train": stems, "test": [], "seed": 0, "test_fraction": 0.0}, tmp_path / "all.json")
    save_file({"model.x": torch.zeros(1)}, str(bare), metadata={
        "split": str(leaky), "split_sha256": file_sha256(leaky), "data_root": str(tiny.parent / "data")})
    errors = preflight.preflight(context(tiny, *flags))
    assert len(errors) == 1 and "would train on 3 test sample(s)" in errors[0], errors
    save_file({"model.x": torch.zeros(1)}, str(bare), metadata={"procedural": "true"})
    assert preflight.preflight(context(tiny, *flags)) == []


def test_study_generation_takes_low_frequency_guidance_and_checks_it():
    from evaluation.study.config import _GENERATION
    from evaluation.study.stages.generation import generation_options

    g = {**_GENERATION, "sampler": "unipc", "steps": 20, "guidance_scale": 3.0, "guidance_low": [1.0, 5],
         "guidance_interval": None}
    assert generation_options(g).guidance_low == (1.0, 5)
    assert generation_options({**g, "guidance_low": None}).guidance_low is None
    with pytest.raises(UserError, match="guidance_low needs SCALE SIZE"):
        generation_options({**g, "guidance_low": [1.0, 4]})


def test_study_generation_takes_a_guidance_interval_and_checks_it():
    from evaluation.study.config import _GENERATION
    from evaluation.study.stages.generation import generation_options

    g = {**_GENERATION, "sampler": "unipc", "steps": 16, "guidance_scale": 3.0, "guidance_low": None,
         "guidance_interval": [10, 900]}
    assert generation_options(g).guidance_interval == (10, 900)
    assert generation_options({**g, "guidance_interval": None}).guidance_interval is None
    with pytest.raises(UserError, match="guidance_interval needs two whole timesteps"):
        generation_options({**g, "guidance_interval": [900, 10]})


def test_an_unset_guidance_interval_leaves_the_generation_stage_inputs_as_before(tiny):
    from evaluation.study.stages.generation import GenerationStage

    stage = GenerationStage("substitution", ["substitution.generator", "substitution.split"])
    assert "guidance_interval" not in stage.inputs(context(tiny))
    ctx = context(tiny, "studies.substitution.generation.guidance_interval=[10,900]")
    assert stage.inputs(ctx)["guidance_interval"] == [10, 900]
    assert preflight.preflight(ctx) == []
    bad = context(tiny, "studies.substitution.generation.guidance_interval=[900,10]")
    assert any("guidance_interval needs two whole timesteps" in e for e in preflight.preflight(bad))
