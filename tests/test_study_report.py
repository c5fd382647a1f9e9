"""The study report's detector targets, judged on paired per-seed differences (synthetic protocol results)."""
from __future__ import annotations

import math

import pytest

from evaluation.paired import paired_differences
from evaluation.study import report
from evaluation.study.stages.generation import plain_setting

CFG = {"targets": {"substitution_s_ratio": 0.9, "iou_ratio": 0.8}}


def _rows(values: dict[str, list[float]]) -> list[dict]:
    return [{"detector": f"seed{k}", "setting": setting, "train_data": setting, "n_train": 1, "n_test": 3,
             **{m: v for m in ("S", "MAE", "E_max", "F_max", "IoU", "Dice")}}
            for setting, vs in values.items() for k, v in enumerate(vs)]


def _targets(study: str, values: dict[str, list[float]], per_image=None) -> list[dict]:
    rows = _rows(values)
    paired = report.study_paired({"rows": rows, "paired": paired_differences(rows, "real", per_image)
                                  if per_image else None})
    return report.targets(CFG, {study: report.aggregate(rows)}, {}, {study: rows}, {study: paired})


def test_expansion_target_is_judged_on_the_paired_differences():
    # seed effects shared by both settings: unpaired stds (0.05) dwarf the gain (0.01), the paired ones do not
    values = {"real": [0.60, 0.70, 0.65], "real+generated": [0.61, 0.71, 0.66],
              "real+generated fair": [0.60, 0.72, 0.64]}
    got = {t["target"].split(":")[0]: t for t in _targets("expansion", values)}
    plain, fair = got["expansion"], got["expansion (real pairs at a fixed share of every batch)"]
    assert plain["met"] is True and plain["value"] == pytest.approx(0.01) and plain["threshold"] == pytest.approx(0)
    assert "seed0 +0.0100" in plain["detail"] and "per-image S not stored" in plain["detail"]
    assert fair["met"] is False and fair["value"] == pytest.approx(0.01 / 3) and fair["threshold"] > 0.015
    assert "by more than the seeds' spread" in plain["target"]
    one = _targets("expansion", {"real": [0.6], "real+generated": [0.7]})[0]
    assert one["met"] is None and "one seed gives no spread" in one["detail"]


def test_substitution_target_is_the_mean_paired_ratio_with_the_image_interval():
    per_image = {(f"seed{k}", s): {"a": v, "b": v + 0.02, "c": v - 0.02}
                 for s, vs in {"real": [0.80, 0.60], "generated": [0.70, 0.57]}.items() for k, v in enumerate(vs)}
    t = _targets("substitution", {"real": [0.80, 0.60], "generated": [0.70, 0.57]}, per_image)[0]
    # ratios 0.875 and 0.95: mean 0.9125 >= 0.9 (the ratio of the means, 1.27 / 1.40 = 0.907, is not what counts)
    assert t["met"] is True and t["value"] == pytest.approx(0.9125) and t["threshold"] == 0.9
    assert "seed0 0.875, seed1 0.950" in t["detail"] and "bootstrap 95 % over 3 test images" in t["detail"]
    assert not math.isnan(t["value"])


def test_substitution_target_pools_detector_and_generation_seeds():
    g1 = "generated (generation seed 1)"
    t = _targets("substitution", {"real": [0.80, 0.60], "generated": [0.70, 0.57], g1: [0.76, 0.60]})[0]
    # four paired ratios: 0.875, 0.95 (generation seed 0), 0.95, 1.0 (seed 1): mean 0.94375
    assert t["value"] == pytest.approx(0.94375) and t["met"] is True
    assert "per detector seed x generation seed" in t["target"]
    assert "seed0 0.875, seed1 0.950, seed0 (generation seed 1) 0.950, seed1 (generation seed 1) 1.000" in t["detail"]
    assert f"{g1} − real" in t["detail"]
    # the paper comparison uses the mean over generation seeds too
    agg = report.aggregate(_rows({"real": [0.80, 0.60], "generated": [0.70, 0.57], g1: [0.76, 0.60]}))
    assert report.our_effect("substitution", agg) == {"plain": pytest.approx((0.635 + 0.68) / 2 / 0.70)}


def test_the_expansion_effect_keeps_plain_and_fair_apart_for_every_generation_seed():
    g1 = "real+generated (generation seed 1)"
    agg = report.aggregate(_rows({"real": [0.80, 0.80], "real+generated": [0.77, 0.77], g1: [0.76, 0.76],
                                  "real+generated fair": [0.82, 0.82], f"{g1} fair": [0.83, 0.83]}))
    # a seeded fair row once counted as plain: (0.77 + 0.76 + 0.83) / 3 - 0.80 = -0.013
    assert report.our_effect("expansion", agg) == {"plain": pytest.approx(-0.035), "fair": pytest.approx(0.025)}
    line = report.effect_line("expansion", {"MINet": 0.046}, report.our_effect("expansion", agg))
    assert line.endswith("ours -0.035, fair +0.025 (mean over seeds).")
    assert plain_setting(f"{g1} fair") == "real+generated fair"


def test_expansion_targets_are_judged_per_generation_seed():
    values = {"real": [0.60, 0.70], "real+generated": [0.61, 0.71],
              "real+generated (generation seed 1)": [0.62, 0.70]}
    got = [t["target"] for t in _targets("expansion", values)]
    assert len(got) == 2 and "real+generated (generation seed 1) beats real" in got[1]


@pytest.mark.parametrize("value", ["nan", "1.5", "0", "half"])
def test_a_bad_fair_share_in_the_study_config_is_one_line(value):
    from evaluation.study.config import load_study_config
    from runtime.errors import UserError

    with pytest.raises(UserError) as err:
        load_study_config("configs/study/sd900_quick.yaml", [f"studies.expansion.detectors.real_share={value}"])
    msg = str(err.value)
    assert "sd900_quick.yaml" in msg and "real_share must be a number between 0 and 1" in msg and "\n" not in msg
    assert load_study_config("configs/study/sd900_quick.yaml")["studies"]["expansion"]["detectors"]["real_share"] == 0.5


@pytest.mark.parametrize("override, message", [
    ("studies.substitution.generation.seeds=[0,0]", "generation.seeds must be a list of distinct whole numbers"),
    ("studies.substitution.generation.seeds=[]", "generation.seeds must be a list of distinct whole numbers"),
    ("studies.substitution.generation.seeds=[-1]", "generation.seeds must be a list of distinct whole numbers"),
    ("studies.substitution.generator.release=models/nothing.safetensors", "no such .safetensors file"),
    ("studies.substitution.generator.release=configs/study/sd900_quick.yaml", "no such .safetensors file"),
    ("jobs=0", "jobs must be a finite number >= 1, got 0"),
])
def test_bad_generation_seeds_or_release_are_one_line(override, message):
    from evaluation.study.config import load_study_config
    from runtime.errors import UserError

    with pytest.raises(UserError) as err:
        load_study_config("configs/study/sd900_quick.yaml", [override])
    assert message in str(err.value) and "sd900_quick.yaml" in str(err.value) and "\n" not in str(err.value)


def test_a_release_with_a_run_folder_is_refused_and_the_old_seed_key_still_reads():
    from evaluation.study.config import load_study_config
    from runtime.errors import UserError

    with pytest.raises(UserError, match="generator.release uses a trained file as is"):
        load_study_config("configs/study/sd900_quick.yaml", ["studies.substitution.generator.release="
                                                             "models/sd900_vpred.safetensors",
                                                             "studies.substitution.generator.run=OUTPUT/x"])
    with pytest.warns(UserWarning, match=r"generation.seed is read as seeds: \[3\]"):
        cfg = load_study_config("configs/study/sd900_quick.yaml", ["studies.substitution.generation.seed=3"])
    assert cfg["studies"]["substitution"]["generation"]["seeds"] == [3]
    assert "seed" not in cfg["studies"]["substitution"]["generation"]
    shipped = load_study_config("configs/study/sd900_cpu.yaml")["studies"]["substitution"]
    assert shipped["generator"]["release"].endswith("models/sd900_vpred.safetensors")
    assert shipped["generation"]["seeds"] == [0, 1]


def test_detector_runs_side_by_side_share_the_cores_out():
    import os

    from evaluation.study.config import load_study_config
    from evaluation.study.context import Ctx
    from evaluation.study.stamps import StampStore

    def overrides(sets):
        cfg = load_study_config("configs/study/sd900_quick.yaml", sets)
        return Ctx(cfg, StampStore(cfg["out"]), print).device_overrides()

    one_each = f"train.num_threads={max(1, (os.cpu_count() or 1) // 2)}"
    assert overrides(["jobs=1", "threads=0"]) == ["train.device=auto"]  # the detector config's threads
    assert overrides(["jobs=2", "threads=0"]) == ["train.device=auto", one_each]
    assert overrides(["jobs=2", "threads=3"]) == ["train.device=auto", "train.num_threads=3"]
