"""The figures' types and the machine's description."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldlens_bench.common import Machine, Spread, percentile


def test_a_spread_is_the_smallest_the_median_and_the_largest() -> None:
    assert Spread.of([3.0, 1.0, 2.0, 10.0]) == Spread(min=1.0, median=2.5, max=10.0)
    assert Spread.of(iter([4.0])) == Spread(4.0, 4.0, 4.0)


def test_percentile_interpolates_between_the_measured_values() -> None:
    assert percentile([10.0, 20.0, 30.0, 40.0, 50.0], 50) == 30.0
    assert percentile([10.0, 20.0], 99) == pytest.approx(19.9)


def test_an_x86_machine_is_named_by_its_model_and_the_flags_inference_uses(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8375C\nflags\t\t: fpu sse2 avx2 fma avx512f "
        "avx512_vnni ht\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8375C\n"
    )
    machine = Machine.here(cpuinfo)
    assert machine.cpu_model == "Intel(R) Xeon(R) Platinum 8375C"
    assert machine.flags == ("avx2", "fma", "avx512f", "avx512_vnni")
    assert machine.describe().endswith(
        f"{machine.cpus} CPUs: Intel(R) Xeon(R) Platinum 8375C (avx2, fma, avx512f, avx512_vnni)"
    )


def test_an_arm_machine_is_named_by_its_features(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 asimddp\nCPU part\t: 0xd0b\n")
    assert Machine.here(cpuinfo).flags == ("asimd", "asimddp")


def test_without_cpuinfo_the_machine_is_still_described(tmp_path: Path) -> None:
    machine = Machine.here(tmp_path / "missing")
    assert machine.flags == () and machine.cpu_model and machine.cpus >= 1
