"""One strict options layer (runtime/options.py): defaults -> YAML -> --set, for every tool. A mistyped
key, in a YAML file or in --set, at any depth, is one line naming the key, where it came from and
the nearest valid key."""
from __future__ import annotations

from pathlib import Path

import pytest

from runtime import options as O
from runtime.errors import UserError, run_cli

REPO = Path(__file__).resolve().parents[1]
DEMO = (REPO / "configs" / "demo.yaml").read_text()
SUBST = (REPO / "configs" / "eval" / "substitution.yaml").read_text()
DETECTOR = (REPO / "configs" / "eval" / "detector.yaml").read_text()


def _main(tool: str):
    if tool == "main":
        import main
        return main.main
    if tool == "protocols":
        from evaluation.protocols import main
        return lambda argv: main(["run", *argv])
    if tool == "detector":
        from evaluation.detector.train import main
        return main
    if tool == "maskgen.train":
        from maskgen.train import main
        return main
    from maskgen.sample import main
    return main


def _argv(tool: str, tmp: Path, config: Path | None) -> list[str]:
    cfg = ["--config", str(config)] if config else []
    if tool == "main":
        return ["--yaml_file", str(config or REPO / "configs" / "demo.yaml"), "--OUTPUT_ROOT", str(tmp / "o")]
    if tool == "protocols":
        return ["--config", str(config or REPO / "configs" / "eval" / "substitution.yaml")]
    if tool == "detector":
        return ["--data_root", str(tmp), "--out", str(tmp / "o"), *cfg]
    if tool == "maskgen.train":
        return ["--data_root", str(tmp), "--out", str(tmp / "o"), *cfg]
    return ["--ckpt", str(tmp / "none.pt"), "--out", str(tmp / "o"), *cfg]


# tool, --set item with a typo, the valid key it must suggest
SET_CASES = [
    ("main", "train.sample_step=3", "train.sample_steps"),
    ("main", "data.imge_size=32", "data.image_size"),
    ("main", "difusion.params.timesteps=10", "diffusion"),
    ("main", "model.params.num_head=2", "model.params.num_heads"),
    ("protocols", "dat_root=x", "data_root"),
    ("protocols", "train.epoch=5", "detector_overrides=[train.epoch=..."),
    ("protocols", "settings.1.generated.0.dri=x", "settings.1.generated.0.dir"),
    ("protocols", "detector_overrides=[train.epoch=5]", "train.epochs"),
    ("detector", "train.epoch=5", "train.epochs"),
    ("maskgen.train", "train.ema_decy=0.9", "train.ema_decay"),
    ("maskgen.sample", "sample.guidence=2", "sample.guidance"),
]

# tool, (old text, new text) applied to the tool's YAML, the valid key it must suggest
YAML_CASES = [
    ("main", DEMO, ("\ndiffusion:", "\ndifusion:"), "diffusion"),
    ("main", DEMO, ("  image_size: 32\n  prob_use", "  imagesize: 32\n  prob_use"), "data.image_size"),
    ("main", DEMO, ("  sample_steps: 50", "  sample_step: 50"), "train.sample_steps"),
    ("main", DEMO, ("procedural: {n_per_category", "procedural: {n_per_categry"), "data.procedural.n_per_category"),
    ("protocols", SUBST, ("detector_overrides:", "detector_overide:"), "detector_overrides"),
    ("protocols", SUBST, ("    overrides: []", "    overrides: [train.epoch=5]"), "train.epochs"),
    ("detector", DETECTOR, ("  epochs: 40", "  epoch: 40"), "train.epochs"),
    ("maskgen.train", "model:\n  base_channel: 8\n", None, "model.base_channels"),
    ("maskgen.train", "modle:\n  base_channels: 8\n", None, "model"),
    ("maskgen.sample", "sample:\n  treshold: 0.6\n", None, "sample.threshold"),
]


def _one_line_error(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as code:
        run_cli(lambda: main(argv))
    assert code.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("tool,item,suggest", SET_CASES, ids=[f"{c[0]}:{c[1]}" for c in SET_CASES])
def test_mistyped_set_key_names_nearest(tool, item, suggest, tmp_path, capsys):
    flag = "--set"
    err = _one_line_error(_main(tool), [*_argv(tool, tmp_path, None), flag, item], capsys)
    bad = item.split("=")[0] if "overrides" not in item else "train.epoch"
    if suggest.startswith("detector_overrides"):  # a detector key given to a protocol
        assert suggest in err, err
        return
    assert bad in err and "unknown key" in err and f"did you mean '{suggest}'" in err, err


@pytest.mark.parametrize("tool,text,edit,suggest", YAML_CASES, ids=[f"{c[0]}:{c[3]}" for c in YAML_CASES])
def test_mistyped_yaml_key_names_file_and_nearest(tool, text, edit, suggest, tmp_path, capsys):
    if edit is not None:
        assert edit[0] in text
        text = text.replace(edit[0], edit[1], 1)
    path = tmp_path / "typo.yaml"
    path.write_text(text)
    err = _one_line_error(_main(tool), _argv(tool, tmp_path, path), capsys)
    assert f"did you mean '{suggest}" in err, err
    assert str(path) in err or "overrides" in err, err


def test_layering_order_types_and_interpolation(tmp_path):
    schema = {"a": {"b": 1, "c": 0.5}, "items": O.ListOf({"x": 0}), "free": O.Open(None)}
    path = tmp_path / "c.yaml"
    path.write_text("a: {b: 2, c: 5e-5}\nitems: [{x: 1}, {x: 2}]\nfree: {anything: [1]}\n")
    cfg = O.layered(schema, path, ["a.b=3", "items.1.x=7"])
    assert cfg == {"a": {"b": 3, "c": 5e-5}, "items": [{"x": 1}, {"x": 7}], "free": {"anything": [1]}}
    with pytest.raises(UserError, match="'a.b' must be an integer"):
        O.layered(schema, None, ["a.b=five"])
    with pytest.raises(UserError, match="index below 2"):
        O.layered(schema, path, ["items.5.x=1"])
    path.write_text("a:\n")                                 # an empty section keeps its defaults
    assert O.layered(schema, path)["a"] == {"b": 1, "c": 0.5}
    path.write_text("a: {b: '${nope}'}\n")
    with pytest.raises(UserError, match="interpolation") as err:
        O.layered(schema, path)
    assert "\n" not in str(err.value)


def test_maskgen_has_one_set_of_defaults():
    """The sample settings' defaults are the config schema's; no default config file repeats them."""
    from maskgen.config import DEFAULTS, load_config
    from maskgen.sample import SampleSettings

    assert load_config() == DEFAULTS
    settings = SampleSettings()
    assert {k: getattr(settings, k) for k in DEFAULTS["sample"]} == DEFAULTS["sample"]
    assert not (REPO / "configs" / "maskgen.yaml").exists()
    cpu = load_config(REPO / "configs" / "maskgen_cpu.yaml")
    assert cpu["model"]["patch_size"] == 2 and cpu["data"] == DEFAULTS["data"]


@pytest.mark.parametrize("argv,expect", [
    (["--lr", "nan"], "train.lr must be a finite number > 0"),
    (["--lr", "inf"], "train.lr must be a finite number > 0"),
    (["--set", "train.ema_decay=1.5"], "train.ema_decay must be in [0, 1)"),
    (["--set", "train.epochs=two"], "'train.epochs' must be an integer"),
])
def test_maskgen_train_bad_values_are_one_line(argv, expect, tmp_path, capsys):
    err = _one_line_error(_main("maskgen.train"), [*_argv("maskgen.train", tmp_path, None), *argv], capsys)
    assert expect in err, err
