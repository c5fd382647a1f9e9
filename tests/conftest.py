"""Shared test fixtures.

``DEFFILLER_SHARED`` (set by ``.ci/run``) points at the read-only ``shared/`` folder with the real
SD-Saliency-900 data and the reference fixtures; without it we look at ``../shared`` next to the repo.
Tests that need it skip with a message saying so when it is absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores: one torch thread each, or they fight over the cores
    import torch

    torch.set_num_threads(1)


# The longest test files, longest first: `make test` hands whole files to its two workers in collection order, so
# starting these first keeps one worker from being left with a long file while the other has finished.
LONGEST_FIRST = ("test_study.py", "test_gpu_check.py", "test_write_errors.py", "test_app_browser.py", "test_infer.py",
                 "test_eval_detector_inputs.py", "test_eval_protocols.py", "test_checkpoint_io.py")


def pytest_collection_modifyitems(items: list) -> None:
    """Run the files of :data:`LONGEST_FIRST` first, in that order; every other file and every test order within a
    file stay as collected."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def _shared_dir() -> Path:
    return Path(os.environ.get("DEFFILLER_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = _shared_dir()
    if not path.is_dir():
        pytest.skip(f"shared data folder not found at {path} (set DEFFILLER_SHARED)")
    return path


@pytest.fixture(scope="session")
def saliency_root(shared_dir: Path) -> Path:
    path = shared_dir / "data" / "SD-saliency-900"
    if not path.is_dir():
        pytest.skip(f"SD-Saliency-900 not found at {path}")
    return path


@pytest.fixture(scope="session")
def fixture_prefix(shared_dir: Path) -> Path:
    prefix = shared_dir / "fixtures" / "gligen_sem_tiny"
    if not prefix.with_suffix(".npz").is_file():
        pytest.skip(f"reference fixture not found at {prefix}.npz")
    return prefix
