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
