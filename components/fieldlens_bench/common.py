"""What every bench part shares: its figures' types, percentiles and spreads, and the machine it ran on.

A part's result is a frozen dataclass (a :class:`Result`) whose field names are the keys that
``fieldlens bench --json`` writes, so the file and the printed table come from the same value.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

INFERENCE_FLAGS = (
    # x86: the vector and matrix extensions ONNX Runtime's kernels choose between
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    # arm64: NEON, its dot product and int8 matrix multiply, SVE
    "asimd",
    "asimddp",
    "i8mm",
    "bf16",
    "sve",
    "sve2",
)
"""The CPU flags that decide how fast inference runs (fp32 against int8 above all); the rest are noise."""


@dataclass(frozen=True)
class Result:
    """A bench part's figures: what ``report`` prints and ``--json`` writes."""

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Spread:
    """A figure measured in each of several runs: the smallest, the median and the largest."""

    min: float
    median: float
    max: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        values = list(values)
        return cls(min(values), statistics.median(values), max(values))


@dataclass(frozen=True)
class Floor:
    """Pure ONNX Runtime on a ready tensor: what the end-to-end figures are compared with."""

    p50_ms: float
    p99_ms: float
    throughput_per_s: float


@dataclass(frozen=True)
class Memory:
    """A process's resident memory now and its peak (VmHWM), in MB."""

    rss_mb: float
    peak_rss_mb: float


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


@dataclass(frozen=True)
class Machine:
    """The machine a run measured: figures from two machines are only compared with this beside them."""

    arch: str
    cpu_model: str
    cpus: int
    """The CPUs this process may run on (its affinity, not the machine's count)."""
    flags: tuple[str, ...]
    """Those of :data:`INFERENCE_FLAGS` the CPU has."""

    @classmethod
    def here(cls, cpuinfo: Path = Path("/proc/cpuinfo")) -> Machine:
        fields: dict[str, str] = {}
        try:
            text = cpuinfo.read_text()
        except OSError:  # not Linux: what platform says
            text = ""
        for line in text.splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip().lower(), value.strip())
        model = fields.get("model name") or fields.get("model") or platform.processor() or "unknown CPU"
        present = set((fields.get("flags") or fields.get("features") or "").split())
        return cls(
            arch=platform.machine(),
            cpu_model=model,
            cpus=len(os.sched_getaffinity(0)),
            flags=tuple(flag for flag in INFERENCE_FLAGS if flag in present),
        )

    def describe(self) -> str:
        """One line: ``x86_64, 2 CPUs: Intel(R) Xeon(R) Processor (avx2, avx512f)``."""
        flags = f" ({', '.join(self.flags)})" if self.flags else ""
        return f"{self.arch}, {self.cpus} CPUs: {self.cpu_model}{flags}"
