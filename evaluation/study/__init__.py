"""The real-data study (``python -m evaluation.study --config configs/study/sd900_cpu.yaml``): the paper's
data-substitution and data-expansion studies as one staged, resumable pipeline; see
:mod:`evaluation.study.pipeline` for how stages are skipped, resumed and rebuilt."""
from __future__ import annotations

from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .cli import main as cli_main

    return cli_main(argv)
