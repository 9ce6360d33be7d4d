"""The bench's tables: every repeated figure as median (min-max), against issue 13's goals."""

from __future__ import annotations

from typing import Any

import pytest

from fieldlens_cli import bench_edge, bench_retrain
from fieldlens_cli.bench_edge import spread


def edge_result(baseline: bool) -> dict[str, Any]:
    each = {
        "e2e_p50_ms": spread([18.0, 18.5, 19.5]),
        "e2e_p99_ms": spread([25.0, 26.0, 30.0]),
        "e2e_p50_over_floor_ms": spread([6.0, 6.5, 7.5]),
        "burst_throughput_per_s": spread([50.0, 55.0, 60.0]),
        "throughput_ratio": spread([0.6, 0.65, 0.7]),
        "burst_errors": spread([0, 0, 3]),
        "cold_start_s": spread([1.1, 1.2, 1.4]),
    }
    if baseline:
        each |= {
            "baseline_p50_ms": spread([17.0, 17.2, 17.9]),
            "baseline_p99_ms": spread([20.0, 21.0, 22.0]),
            "ratio_to_baseline": spread([1.04, 1.06, 1.09]),
        }
    return {
        "floor": {"p50_ms": 12.0, "p99_ms": 13.0, "throughput_per_s": 84.0},
        "memory": {name: {"rss_mb": 50.0, "peak_rss_mb": 51.0} for name in ("classifier", "inference")},
        "burst_requests": 200,
        "burst_cpu_ms_per_request": {"inference": 23.0},
        "repeats": 3,
        "each": each,
    }


def test_the_edge_table_gives_each_repeated_figure_its_spread_and_goal(capsys: pytest.CaptureFixture[str]) -> None:
    bench_edge.report(edge_result(baseline=True))
    rows = {line.split(" | ")[0].lstrip("| "): line for line in capsys.readouterr().out.splitlines() if "|" in line}
    assert "median (min-max) over 3 runs" in next(iter(rows))
    assert "| 6.50 (6.00-7.50) ms | <= 3.0 ms |" in rows["end-to-end p50 over the floor"]
    assert "| 0 (0-3) | 0 |" in rows["burst: answered BUSY or failed"]
    assert "| 65% (60%-70%) | >= 85% |" in rows["burst throughput / pure inference"]
    assert "| 1.06 (1.04-1.09) | <= 1.0 |" in rows["end-to-end p50, fieldlens / hand-rolled"]


def test_without_the_baseline_the_edge_table_has_no_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    bench_edge.report(edge_result(baseline=False))
    assert "hand-rolled" not in capsys.readouterr().out


def test_the_retrain_table_gives_the_spread_and_each_stages_median(capsys: pytest.CaptureFixture[str]) -> None:
    def runs(seconds: list[float], embed: list[float], embedded: int) -> dict[str, Any]:
        return {
            "seconds": spread(seconds),
            "embed": spread(embed),
            "train": spread([1.0, 1.0, 1.0]),
            "export": spread([2.0, 3.0, 4.0]),
            "embedded": spread([embedded] * 3),
        }

    bench_retrain.report(
        {
            "cold": {"images": 1000, **runs([40.0, 50.0, 60.0], [30.0, 40.0, 50.0], 1000)},
            "warm": {"new_images": 50, **runs([9.0, 10.0, 12.0], [4.0, 5.0, 6.0], 50)},
            "repeats": 3,
            "scenario": {"holdout_images": 300, "field_images": 400, "before": 0.2, "after": 0.6},
        }
    )
    out = capsys.readouterr().out
    assert "| 50.0 s (40.0-60.0) (embed 40.0, train 1.0, export 3.0, evaluate 6.0) | <= 45 s |" in out
    assert "50 new images (embedded: 50) | 10.0 s (9.0-12.0) (embed 5.0, train 1.0, export 3.0, evaluate 1.0) |" in out
