"""Whether this CPU's int8 kernels compute the package's int8 graph as written, and which graph to serve.

The int8 graph is static QDQ with uint8 activations and per-channel int8 weights (U8S8, written
by ``fieldlens_retrain.packaging.quantize_int8``). ONNX Runtime fuses it into QLinearConv, and
what its MLAS kernels compute depends on the CPU:

- x86 with AVX-512 VNNI or AVX-VNNI: ``VPDPBUSD`` sums the u8 x s8 products straight into int32.
  Exact.
- x86 with AVX2 (or AVX-512BW) but no VNNI: ``VPMADDUBSW`` first adds pairs of products into
  int16, which saturates (255 x 127 x 2 = 64,770 > 32,767). The graph then answers otherwise:
  81% top-1 agreement with fp32 on an AVX2-only EPYC, against 98% where it is exact.
- aarch64, with the dot product (Pi 5) or without (Pi 4): the products widen into int32. Exact.

The answer comes from the CPU's flags (Linux ``/proc/cpuinfo``), not from running anything, and
this module imports only the standard library: the inference service asks it before choosing a
graph, the model check and the package writer before running the int8 graph.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
EXACT_X86_FLAGS = ("avx512_vnni", "avx_vnni")
"""x86 flags with which MLAS's U8S8 kernels accumulate in int32 (VPDPBUSD), in the order named."""
ARM_MACHINES = frozenset({"aarch64", "arm64"})
X86_MACHINES = frozenset({"x86_64", "amd64"})


@dataclass(frozen=True)
class Int8Kernels:
    """What this CPU's int8 kernels do with the U8S8 graph."""

    exact: bool
    reason: str  # one clause, for the log and the service's status


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The first processor's feature flags (x86 ``flags``, ARM ``Features``); empty when unreadable."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def int8_kernels_for(machine: str, flags: Iterable[str]) -> Int8Kernels:
    """The answer for a CPU described by ``platform.machine()`` and its flags (any CPU, for tests)."""
    machine = machine.lower()
    if machine in ARM_MACHINES:
        return Int8Kernels(True, f"{machine}: int8 kernels widen products into int32 (exact)")
    if machine in X86_MACHINES:
        present = [flag for flag in EXACT_X86_FLAGS if flag in set(flags)]
        if present:
            return Int8Kernels(True, f"{machine} with {present[0]}: int8 kernels accumulate in int32 (exact)")
        return Int8Kernels(
            False,
            f"{machine} without AVX-512 VNNI or AVX-VNNI: int8 kernels add pairs of products into int16 "
            "(VPMADDUBSW), which saturates",
        )
    return Int8Kernels(False, f"{machine or 'unknown machine'}: int8 kernels not known to be exact")


@functools.cache
def int8_kernels() -> Int8Kernels:
    """The answer for this machine (read once per process)."""
    return int8_kernels_for(platform.machine(), cpu_flags())


AUTO = "auto"


@dataclass(frozen=True)
class VariantChoice:
    """The graph the service serves and why (its log and its status carry ``reason``)."""

    variant: str
    reason: str


def choose_variant(
    configured: str,
    variants: Collection[str],
    kernels: Int8Kernels,
    timings_ms: Mapping[str, float] | None = None,
) -> VariantChoice:
    """Which of the package's ``variants`` to serve when ``configured`` (``auto``, ``fp32``, ``int8``).

    ``auto`` serves int8 only where this CPU computes it exactly and, when ``timings_ms`` (each
    variant's time per image, measured at start on this device) is given, only where it is also
    the faster one; fp32 otherwise. An explicit variant is served as configured (the reason
    says so, and says when this CPU's kernels would change the int8 graph's answers).
    """
    if configured != AUTO:
        if configured == "int8" and not kernels.exact:
            return VariantChoice(configured, f"configured (modelVariant int8), although {kernels.reason}")
        return VariantChoice(configured, f"configured (modelVariant {configured})")
    if "int8" not in variants:
        return VariantChoice("fp32", "auto: the package has no int8 graph")
    if not kernels.exact:
        return VariantChoice("fp32", f"auto: {kernels.reason}; fp32 answers as written")
    if timings_ms is None:
        return VariantChoice("int8", f"auto: {kernels.reason}")
    int8, fp32 = timings_ms["int8"], timings_ms["fp32"]
    measured = f"int8 {int8:.1f} ms, fp32 {fp32:.1f} ms per image on this device"
    if int8 < fp32:
        return VariantChoice("int8", f"auto: {kernels.reason}, and int8 is the faster here ({measured})")
    return VariantChoice("fp32", f"auto: {kernels.reason}, but fp32 is the faster here ({measured})")
