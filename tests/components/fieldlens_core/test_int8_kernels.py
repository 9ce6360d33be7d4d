"""Which CPUs compute the int8 graph as written, and which graph the service then serves (any CPU's
answer is asked of the pure functions, so these hold on every machine that runs them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldlens_core.int8_kernels import AUTO, Int8Kernels, choose_variant, cpu_flags, int8_kernels_for

AVX2_ONLY = ["fpu", "sse", "sse2", "ssse3", "sse4_1", "sse4_2", "avx", "fma", "avx2", "bmi2"]
SKYLAKE_X = [*AVX2_ONLY, "avx512f", "avx512bw", "avx512vl"]  # AVX-512 without VNNI: VPMADDUBSW too
EXACT = Int8Kernels(True, "aarch64: int8 kernels widen products into int32 (exact)")
SATURATING = int8_kernels_for("x86_64", AVX2_ONLY)


@pytest.mark.parametrize(
    ("machine", "flags", "exact"),
    [
        ("aarch64", [], True),  # a Pi 4 (asimd only) and a Pi 5 (asimddp) alike
        ("aarch64", ["fp", "asimd", "asimddp"], True),
        ("x86_64", [*SKYLAKE_X, "avx512_vnni"], True),
        ("x86_64", [*AVX2_ONLY, "avx_vnni"], True),  # Alder Lake and later: VNNI without AVX-512
        ("x86_64", AVX2_ONLY, False),
        ("x86_64", SKYLAKE_X, False),
        ("x86_64", [], False),  # no /proc/cpuinfo (a chroot): not known to be exact
        ("armv7l", ["neon"], False),  # never measured
    ],
)
def test_int8_is_exact_on_arm_and_on_x86_with_vnni_only(machine: str, flags: list[str], exact: bool) -> None:
    kernels = int8_kernels_for(machine, flags)
    assert kernels.exact is exact and kernels.reason.startswith(machine) and "\n" not in kernels.reason


def test_the_saturating_case_names_the_instruction() -> None:
    assert "VPMADDUBSW" in SATURATING.reason and "saturates" in SATURATING.reason


def test_flags_are_read_from_cpuinfo_on_x86_and_arm(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: Xeon\nflags\t\t: fpu avx2 avx512_vnni\n\nprocessor\t: 1\n")
    assert cpu_flags(x86) == {"fpu", "avx2", "avx512_vnni"}
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd asimddp\nCPU part\t: 0xd0b\n")
    assert cpu_flags(arm) == {"fp", "asimd", "asimddp"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_auto_serves_fp32_where_int8_saturates_whatever_the_timing() -> None:
    choice = choose_variant(AUTO, ["fp32", "int8"], SATURATING, {"fp32": 40.0, "int8": 20.0})
    assert choice.variant == "fp32" and SATURATING.reason in choice.reason


def test_auto_serves_int8_where_it_is_exact_and_the_faster() -> None:
    choice = choose_variant(AUTO, ["fp32", "int8"], EXACT, {"fp32": 41.3, "int8": 22.7})
    assert choice.variant == "int8"
    assert EXACT.reason in choice.reason and "int8 22.7 ms, fp32 41.3 ms" in choice.reason


def test_auto_serves_fp32_where_int8_is_exact_but_the_slower() -> None:
    choice = choose_variant(AUTO, ["fp32", "int8"], EXACT, {"fp32": 20.0, "int8": 30.0})
    assert choice.variant == "fp32" and "fp32 is the faster" in choice.reason


def test_auto_without_a_timing_goes_by_the_kernels() -> None:
    assert choose_variant(AUTO, ["fp32", "int8"], EXACT).variant == "int8"
    assert choose_variant(AUTO, ["fp32", "int8"], SATURATING).variant == "fp32"


def test_auto_serves_fp32_from_a_package_without_int8() -> None:
    choice = choose_variant(AUTO, ["fp32"], EXACT, {"fp32": 1.0})
    assert choice.variant == "fp32" and "no int8 graph" in choice.reason


def test_a_configured_variant_is_served_and_saturation_is_said() -> None:
    assert choose_variant("fp32", ["fp32", "int8"], EXACT).reason == "configured (modelVariant fp32)"
    forced = choose_variant("int8", ["fp32", "int8"], SATURATING)
    assert forced.variant == "int8" and "saturates" in forced.reason
