"""The retrain table: each figure's spread over the runs, and each stage's median."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fieldlens_bench import retrain
from fieldlens_bench.common import Spread
from fieldlens_retrain.gate import GateDecision
from fieldlens_retrain.pipeline import RetrainReport


def runs(images: int, seconds: list[float], embed: list[float], embedded: int) -> retrain.RetrainRuns:
    return retrain.RetrainRuns(
        images=images,
        seconds=Spread.of(seconds),
        embedded=Spread.of([embedded] * 3),
        stages={
            "embed": Spread.of(embed),
            "train": Spread.of([1.0, 1.0, 1.0]),
            "export": Spread.of([2.0, 3.0, 4.0]),
            retrain.REST: Spread.of([0.5, 0.6, 0.7]),
        },
    )


RESULT = retrain.RetrainResult(
    cold=runs(1000, [40.0, 50.0, 60.0], [30.0, 40.0, 50.0], 1000),
    warm=runs(50, [9.0, 10.0, 12.0], [4.0, 5.0, 6.0], 50),
    repeats=3,
    scenario=retrain.ScenarioScores(holdout_images=300, field_images=400, before=0.2, after=0.6),
    backbone_views_per_s=200.0,
    preparation=retrain.Preparation(export_s=6.2, quantize_s=7.9),
)


def test_the_retrain_table_gives_the_spread_and_each_stages_median(capsys: pytest.CaptureFixture[str]) -> None:
    retrain.report(RESULT)
    out = capsys.readouterr().out
    assert (
        "(the backbone's graphs built) | 50.0 s (40.0-60.0) (embed 40.0, train 1.0, export 3.0, rest 0.6) "
        "| <= 45 s |" in out
    )
    assert "50 new images (embedded: 50) | 10.0 s (9.0-12.0) (embed 5.0, train 1.0, export 3.0, rest 0.6) |" in out


def test_the_rest_is_each_runs_time_outside_its_stages_not_a_difference_of_medians() -> None:
    """Medians of different runs need not add up: the total's median less the stages' once read
    as a 3.2 s evaluation of a cold retrain whose evaluations each took 0.1 s."""
    decision = GateDecision(publish=True, reason="forced")

    def report(embed: float, evaluate: float) -> RetrainReport:
        return RetrainReport(
            "1.0.1", decision, {}, None, None, Path("."), timings_s={"embed": embed, "evaluate": evaluate}
        )

    measured = retrain._runs(1000, [(report(40.0, 0.1), 41.0), (report(50.0, 0.1), 50.5), (report(44.0, 0.1), 48.0)])
    assert measured.stages["evaluate"].median == pytest.approx(0.1)
    rest = measured.stages[retrain.REST]
    assert (rest.min, rest.median, rest.max) == pytest.approx((0.4, 0.9, 3.9))


def test_the_json_puts_each_stage_beside_the_totals() -> None:
    written = RESULT.as_json()
    assert list(written["cold"]) == ["images", "floor_s", "seconds", "embedded", "embed", "train", "export", "rest"]
    assert written["warm"]["new_images"] == 50
    assert written["cold"]["embed"] == {"min": 30.0, "median": 40.0, "max": 50.0}
    assert written["scenario"] == {"holdout_images": 300, "field_images": 400, "before": 0.2, "after": 0.6}
    assert written["preparation_s"] == {"export_s": 6.2, "quantize_s": 7.9}


def test_the_backbones_graphs_are_a_row_of_their_own_outside_the_cold_retrain(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Built once per backbone on a machine, they are not in a cold retrain's time, so the table says them."""
    retrain.report(RESULT)
    out = capsys.readouterr().out
    assert (
        "| the first retrain on a machine adds, once per backbone, its graphs | export 6.2 s, int8 quantization "
        "7.9 s (the cold retrain and them: 64.1 s) |" in out
    )


def test_a_retrain_is_held_to_its_floor_on_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    """1,000 images x 6 views at 200 views/s is 30 s of backbone, plus 1 s of training: 31 s."""
    assert RESULT.floor_s(RESULT.cold) == pytest.approx(31.0)
    retrain.report(RESULT)
    out = capsys.readouterr().out
    assert "plus training: 31.0 s) | 1.61x | <= 1.2x |" in out
    assert (
        "| retrain with 50 new images, beyond embedding them (and fine-tuning, when chosen) | 5.0 s | <= 3 s |" in out
    )


def test_fine_tuning_counts_as_training_in_the_floor_and_is_shown_apart(capsys: pytest.CaptureFixture[str]) -> None:
    tuned = runs(50, [90.0, 91.0, 92.0], [2.0, 2.0, 2.0], 50)
    tuned.stages["fine_tune"] = Spread.of([79.0, 80.0, 81.0])
    result = dataclasses.replace(RESULT, warm=tuned)
    assert result.floor_s(tuned) == pytest.approx(50 * 6 / 200 + 1.0 + 80.0)
    retrain.report(result)
    out = capsys.readouterr().out
    assert "(embed 2.0, train 1.0, export 3.0, rest 0.6, fine_tune 80.0)" in out
    assert "beyond embedding them (and fine-tuning, when chosen) | 9.0 s |" in out
