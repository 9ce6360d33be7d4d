"""The edge table: every repeated figure as median (min-max), against the README's goals."""

from __future__ import annotations

import pytest

from fieldlens_bench import edge
from fieldlens_bench.common import Floor, Memory, Spread


def edge_result(baseline: bool) -> edge.EdgeResult:
    each = {
        "e2e_p50_ms": Spread.of([18.0, 18.5, 19.5]),
        "e2e_p99_ms": Spread.of([25.0, 26.0, 30.0]),
        "e2e_p50_over_floor_ms": Spread.of([6.0, 6.5, 7.5]),
        "burst_throughput_per_s": Spread.of([50.0, 55.0, 60.0]),
        "throughput_ratio": Spread.of([0.6, 0.65, 0.7]),
        "burst_errors": Spread.of([0, 0, 3]),
        "cold_start_s": Spread.of([1.1, 1.2, 1.4]),
    }
    if baseline:
        each |= {
            "baseline_p50_ms": Spread.of([17.0, 17.2, 17.9]),
            "baseline_p99_ms": Spread.of([20.0, 21.0, 22.0]),
            "ratio_to_baseline": Spread.of([1.04, 1.06, 1.09]),
        }
    return edge.EdgeResult(
        model="default 1.0.0 fp32",
        broker="mosquitto",
        floor=Floor(p50_ms=12.0, p99_ms=13.0, throughput_per_s=84.0),
        cold_start_s=1.2,
        ready_s=1.0,
        e2e_p50_ms=18.5,
        e2e_p99_ms=26.0,
        burst_requests=200,
        burst_errors=0,
        burst_throughput_per_s=55.0,
        burst_cpu_ms_per_request={"inference": 23.0},
        memory={name: Memory(rss_mb=50.0, peak_rss_mb=51.0) for name in ("classifier", "inference")},
        repeats=3,
        each=each,
    )


def test_the_edge_table_gives_each_repeated_figure_its_spread_and_goal(capsys: pytest.CaptureFixture[str]) -> None:
    edge.report(edge_result(baseline=True))
    rows = {line.split(" | ")[0].lstrip("| "): line for line in capsys.readouterr().out.splitlines() if "|" in line}
    assert "median (min-max) over 3 runs" in next(iter(rows))
    assert "| 6.50 (6.00-7.50) ms | <= 3.0 ms |" in rows["end-to-end p50 over the floor"]
    assert "| 0 (0-3) | 0 |" in rows["burst: answered BUSY or failed"]
    assert "| 65% (60%-70%) | >= 85% |" in rows["burst throughput / pure inference"]
    assert "| 1.06 (1.04-1.09) | <= 1.0 |" in rows["end-to-end p50, fieldlens / hand-rolled"]


def test_without_the_baseline_the_edge_table_has_no_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    edge.report(edge_result(baseline=False))
    assert "hand-rolled" not in capsys.readouterr().out


def test_the_json_keeps_the_tables_keys() -> None:
    """``--json`` writes the result's fields: the keys the README's figures were read from."""
    written = edge_result(baseline=False).as_json()
    assert list(written)[:3] == ["model", "broker", "floor"]
    assert written["floor"] == {"p50_ms": 12.0, "p99_ms": 13.0, "throughput_per_s": 84.0}
    assert written["memory"]["classifier"] == {"rss_mb": 50.0, "peak_rss_mb": 51.0}
    assert written["each"]["burst_errors"] == {"min": 0, "median": 0, "max": 3}
