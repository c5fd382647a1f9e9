"""The study's stages, each a thin call into the project's own commands (one module per stage, the
base class in :mod:`.base`).

Each stage class says what it depends on (``deps``), what decides its result (``inputs``: config
subset and the files it reads; the digests of the upstream stamps are added by the pipeline), what it
writes (``run`` returns the outputs recorded in its stamp) and which of its outputs are cleared when its
inputs change (``clear``) or moved aside when it is forced (``reset``, training runs). Training stages
call :mod:`evaluation.study.leakage` before they train.
"""
from __future__ import annotations

from typing import Any

from .base import Stage, StageStopped, remove_path
from .baseline import BaselineStage
from .detectors import DetectorsStage, detector_cfg
from .fidelity import FidelityStage
from .filter import FilterStage
from .generation import GenerationStage
from .generator import GeneratorStage, PretrainStage, main_argv
from .maskgen import MaskgenStage
from .report import ReportStage
from .split import SplitStage

__all__ = ["BaselineStage", "DetectorsStage", "FidelityStage", "FilterStage", "GenerationStage", "GeneratorStage",
           "MaskgenStage", "PretrainStage", "ReportStage", "SplitStage", "Stage", "StageStopped", "build_stages",
           "detector_cfg", "main_argv", "remove_path"]


def build_stages(cfg: dict[str, Any]) -> list[Stage]:
    """The stages of the enabled studies in execution order (each study in turn, then the report)."""
    from ..config import enabled_studies

    stages: list[Stage] = []
    for study in enabled_studies(cfg):
        study_cfg = cfg["studies"][study]
        k = lambda kind: f"{study}.{kind}"  # noqa: E731
        stages.append(SplitStage(study, []))
        gen_deps = [k("split")]
        if study_cfg["pretrain"]["enabled"]:
            stages.append(PretrainStage(study, []))
            gen_deps.append(k("pretrain"))
        stages.append(GeneratorStage(study, gen_deps))
        if study == "expansion":
            stages.append(MaskgenStage(study, [k("split")]))
            stages.append(BaselineStage(study, [k("split")]))
            stages.append(GenerationStage(study, [k("generator"), k("maskgen")]))
            stages.append(FilterStage(study, [k("split"), k("generation"), k("baseline")]))
            stages.append(DetectorsStage(study, [k("split"), k("baseline"), k("generation"), k("filter")]))
        else:
            stages.append(BaselineStage(study, [k("split")]))
            stages.append(GenerationStage(study, [k("generator"), k("split")]))
            stages.append(DetectorsStage(study, [k("split"), k("baseline"), k("generation")]))
        stages.append(FidelityStage(study, [k("split"), k("generation"), k("detectors")]))
    stages.append(ReportStage(None, [s.key for s in stages if s.kind == "fidelity"]))
    return stages
