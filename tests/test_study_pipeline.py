"""evaluation.study.pipeline: which training stages train side by side with ``--jobs``."""
from __future__ import annotations

from evaluation.study import pipeline
from evaluation.study.stages.base import Stage


class Training(Stage):
    training = True

    def __init__(self, kind: str, deps: tuple[str, ...] = ()) -> None:
        self.kind = kind
        super().__init__("expansion", list(deps))


class Scoring(Training):
    training = False


def test_side_by_side_passes_over_up_to_date_stages_and_stops_at_a_dependent_or_non_training_one(monkeypatch):
    generator, maskgen, baseline = Training("generator"), Training("maskgen"), Training("baseline")
    generation = Training("generation", ("expansion.generator",))
    up_to_date = {"expansion.maskgen"}
    monkeypatch.setattr(pipeline, "stage_status", lambda stage, ctx, pending, forced: pipeline.Status(
        stage.key, stage.key in up_to_date, ""))
    stages = [generator, maskgen, baseline, generation]
    assert pipeline._side_by_side(stages, 0, None, set()) == [generator, baseline]   # the mask producer passed over
    up_to_date.clear()
    assert pipeline._side_by_side(stages, 0, None, set()) == [generator, maskgen, baseline]  # not the generation:
    assert pipeline._side_by_side(stages, 1, None, set()) == [maskgen, baseline, generation]  # it needs the generator
    assert pipeline._side_by_side([generator, Scoring("fidelity"), baseline], 0, None, set()) == [generator]
