"""The evaluation commands' folder helpers, now :mod:`dataset.folders` (below both evaluation and the
image-set metrics); every name stays importable from here."""
from __future__ import annotations

from dataset.folders import *  # noqa: F403
