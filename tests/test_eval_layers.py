"""The evaluation package's layers: the detector, a subpackage the protocols, the filter and the study build on,
imports nothing from evaluation's own top-level modules or other subpackages (its config loader, split files and
scores sit below, in runtime/, dataset/ and metrics/)."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> list[str]:
    """Absolute module names a file imports (relative imports resolved against its package)."""
    package = path.relative_to(REPO).with_suffix("").parts[:-1]
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            names.append(".".join(base + ([node.module] if node.module else [])))
    return names


def test_the_detector_imports_nothing_above_it():
    upward = {f"{f.relative_to(REPO)} -> {name}" for f in (REPO / "evaluation" / "detector").glob("*.py")
              for name in _imports(f)
              if name.startswith("evaluation") and not name.startswith("evaluation.detector")}
    assert not upward, sorted(upward)


def test_the_modules_below_evaluation_import_nothing_of_it():
    upward = {f"{f.relative_to(REPO)} -> {name}" for folder in ("runtime", "dataset", "metrics")
              for f in (REPO / folder).rglob("*.py") for name in _imports(f) if name.startswith("evaluation")}
    assert not upward, sorted(upward)


def test_an_installed_copy_reads_relative_paths_from_the_current_folder(tmp_path, monkeypatch):
    """Beside a checkout's configs/ the packages use the checkout; installed (no configs/ beside them) they use
    the folder the command runs in, so a study config's relative paths work outside the checkout."""
    import runtime.configs as rc

    assert rc.project_root() == Path(rc.__file__).resolve().parents[1]
    installed = tmp_path / "site-packages" / "runtime"
    installed.mkdir(parents=True)
    monkeypatch.setattr(rc, "__file__", str(installed / "configs.py"))
    monkeypatch.chdir(tmp_path)
    assert rc.project_root() == tmp_path.resolve()
