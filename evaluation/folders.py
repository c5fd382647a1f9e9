"""The evaluation commands' folder helpers, now :mod:`dataset.folders` (below both evaluation and the
image-set metrics); the names stay importable from here."""
from __future__ import annotations

from dataset.folders import *  # noqa: F403
from dataset.folders import IMAGE_EXTS, MASK_EXTS, few  # noqa: F401  (re-exported, as before the move)
