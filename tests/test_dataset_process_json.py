"""process_json.py: caption.json generation and its round trip through find_pairs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import process_json
from dataset import category_for_file, find_pairs, load_captions, write_procedural_dataset
from runtime.errors import UserError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    write_procedural_dataset(path, n_per_category=2, size=12, seed=0)
    return path


def test_round_trip_default(root: Path) -> None:
    before = find_pairs(root)
    assert process_json.main(["--data_root", str(root)]) == 0
    captions = json.loads((root / "caption.json").read_text())
    assert captions["In_1.png"] == "A photo of inclusion"
    assert captions["Pa_2.png"] == "A photo of patches"
    assert captions["Sc_1.png"] == "A photo of scratches"
    assert len(captions) == 6
    after = find_pairs(root)                  # now categories come from caption.json
    assert [p.category for p in after] == [p.category for p in before]
    for name, caption in captions.items():
        assert category_for_file(name, captions=captions) == category_for_file(name)


def test_refuses_overwrite(root: Path) -> None:
    (root / "caption.json").write_text("{}")
    with pytest.raises(UserError) as exc:
        process_json.main(["--data_root", str(root)])
    assert "--overwrite" in str(exc.value) and "\n" not in str(exc.value)
    assert (root / "caption.json").read_text() == "{}"
    process_json.main(["--data_root", str(root), "--overwrite", "--template", "{prompt} defect"])
    assert load_captions(root / "caption.json")["Sc_2.png"] == "scratches defect"


def test_custom_yaml_categories(root: Path, tmp_path: Path) -> None:
    yaml = tmp_path / "cfg.yaml"
    yaml.write_text(
        "categories:\n"
        "  - {name: inclusion, prefix: In, index: 1, prompt: steel inclusion}\n"
        "  - {name: patches, prefix: Pa, index: 2, prompt: surface patch}\n"
        "  - {name: scratches, prefix: Sc, index: 5, prompt: long scratch}\n"
        "other: 1\n")
    out = tmp_path / "caps.json"
    process_json.main(["--data_root", str(root), "--yaml_file", str(yaml), "--output", str(out),
                       "--template", "Image of a {prompt} ({name})"])
    captions = load_captions(out)
    assert captions["Pa_1.png"] == "Image of a surface patch (patches)"
    assert not (root / "caption.json").exists()


def test_bad_inputs(root: Path, tmp_path: Path) -> None:
    for argv in (["--template", "A photo"], ["--template", "A {colour}"],
                 ["--template", "A {prompt"], ["--yaml_file", str(tmp_path / "none.yaml")]):
        with pytest.raises(UserError) as exc:
            process_json.main(["--data_root", str(root), *argv])
        assert "\n" not in str(exc.value)
    with pytest.raises(UserError):               # caption names another category too
        process_json.main(["--data_root", str(root), "--template", "{prompt}, not scratches"])
    assert not (root / "caption.json").exists()


def test_cli_exit_codes(root: Path, tmp_path: Path) -> None:
    help_run = subprocess.run([sys.executable, str(REPO / "process_json.py"), "--help"],
                              capture_output=True, text=True, cwd=tmp_path)
    assert help_run.returncode == 0 and "--template" in help_run.stdout
    bad = subprocess.run([sys.executable, str(REPO / "process_json.py"), "--data_root",
                          str(tmp_path / "missing")], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("error:") and len(bad.stderr.strip().splitlines()) == 1


def test_project_config_categories(root: Path, tmp_path: Path) -> None:
    yaml = tmp_path / "nested.yaml"
    yaml.write_text("model: {x: 1}\ndata:\n  categories:\n"
                    "    - {name: inclusion, prefix: In, index: 1, prompt: dark inclusion}\n"
                    "    - {name: patches, prefix: Pa, index: 2}\n"
                    "    - {name: scratches, prefix: Sc, index: 3}\n")
    process_json.main(["--data_root", str(root), "--yaml_file", str(yaml)])
    assert load_captions(root / "caption.json")["In_2.png"] == "A photo of dark inclusion"
    shipped = REPO / "configs" / "sd_saliency_900.yaml"
    if shipped.is_file():
        from dataset import DEFAULT_CATEGORIES, load_categories_yaml

        assert load_categories_yaml(shipped) == list(DEFAULT_CATEGORIES)
