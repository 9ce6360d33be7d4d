"""`fieldlens bench`, the edge path: speed and memory, every figure measured in this one run.

Baselines come from the same run: pure ONNX Runtime inference on a ready tensor is the
floor that end-to-end latency and throughput are compared with. End to end means: publish
on the broker -> classifier -> camera (folder of 400x400 JPEGs, the seed's resolution) ->
inference service over its socket -> image and sidecar kept with fsync -> response
received by the requester.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from fieldlens_bench.common import Floor, Memory, Result, Spread, percentile
from fieldlens_bench.harness import camera_photos, pure_inference, rss_mb, serve_options, wait_all
from fieldlens_bench.runner import BenchOptions
from fieldlens_cli.model_commands import ensure_default_model
from fieldlens_cli.output import emit
from fieldlens_cli.requester import Requester
from fieldlens_cli.stack import local_stack
from fieldlens_cli.supervisor import ServeOptions
from fieldlens_core.model_package import load_package

TARGETS = {  # the goals the README's speed table is held to
    "e2e_p50_over_floor_ms": 3.0,
    "throughput_ratio": 0.85,
    "ratio_to_baseline": 1.0,
    "classifier_rss_mb": 128.0,
    "inference_rss_mb": 200.0,
    "cold_start_s": 3.0,
}


@dataclass(frozen=True)
class EdgeRun:
    """One edge run: a fresh stack, its cold start, the sequential requests, then the burst."""

    cold_start_s: float
    ready_s: float
    broker: str
    e2e_p50_ms: float
    e2e_p99_ms: float
    burst_requests: int
    burst_errors: int
    burst_throughput_per_s: float
    burst_cpu_ms_per_request: dict[str, float]
    """Process name -> its CPU time (user + system) per request of the burst."""
    memory: dict[str, Memory]
    """Component name -> its memory after the burst."""


@dataclass(frozen=True)
class EdgeResult(Result):
    """Per figure, the median over the repeated edge runs (memory: the largest seen), and in
    ``each`` every repeated figure's spread."""

    model: str
    broker: str
    floor: Floor
    cold_start_s: float
    ready_s: float
    e2e_p50_ms: float
    e2e_p99_ms: float
    burst_requests: int
    burst_errors: float
    burst_throughput_per_s: float
    burst_cpu_ms_per_request: dict[str, float]
    memory: dict[str, Memory]
    repeats: int
    each: dict[str, Spread]


@dataclass(frozen=True)
class BaselineRun:
    """The hand-rolled handler's sequential latencies."""

    p50_ms: float
    p99_ms: float


def sequential_latencies(requester: Requester, count: int) -> list[float]:
    """Request -> response latency in ms of ``count`` requests, one at a time, after 10 to warm up."""
    for _ in range(10):
        wait_all([requester.send(b"{}")], 30)
    latencies = []
    for _ in range(count):
        item = requester.send(b"{}")
        wait_all([item], 30)
        latencies.append(item.latency_ms)
    return latencies


def run_edge(options: BenchOptions, model_dir: Path, work: Path) -> EdgeRun:
    photos = camera_photos(work / "photos")
    cpus = pinned(options)  # before this process moves off them

    def serving(url: str) -> ServeOptions:
        return serve_options(
            url,
            "bench",
            photos,
            work,
            model_dir,
            options.variant,
            queue_size=None,  # the default configuration: admission by time must take the burst
            workers=options.workers,
            allow_spinning=options.spinning,
            cpus=cpus,
        )

    everywhere = os.sched_getaffinity(0)
    rest = everywhere - set(cpus or ())
    if cpus and rest:
        os.sched_setaffinity(0, rest)  # the requester (and the broker it starts) off the device's CPUs
    try:
        return _edge_on(serving, options)
    finally:
        os.sched_setaffinity(0, everywhere)


def pinned(options: BenchOptions) -> tuple[int, ...] | None:
    """``--cpus N``: the first N CPUs this process may use, for the components (a Pi-sized budget)."""
    return tuple(sorted(os.sched_getaffinity(0))[: options.cpus]) if options.cpus else None


def _edge_on(serving: Callable[[str], ServeOptions], options: BenchOptions) -> EdgeRun:
    with local_stack(serving, "bench", prefer_mosquitto=True) as stack:
        requester = stack.requester()
        first = requester.send(b"{}")
        wait_all([first], 30)
        cold_start_s, ready_s = first.received_at - stack.launched_at, stack.ready_at - stack.launched_at

        sequential = sequential_latencies(requester, options.requests)

        processes = {child.name: psutil.Process(child.pid) for child in stack.children}
        processes["requester (this process)"] = psutil.Process()
        cpu_before = {name: sum(p.cpu_times()[:2]) for name, p in processes.items()}
        burst_started = time.perf_counter()
        burst = [requester.send(b"{}") for _ in range(options.burst)]
        responses = wait_all(burst, 300)
        burst_seconds = max(p.received_at for p in burst) - burst_started
        cpu_ms_per_request = {
            name: (sum(p.cpu_times()[:2]) - cpu_before[name]) * 1000 / options.burst for name, p in processes.items()
        }
        errors = sum(1 for r in responses if "error" in r)
        memory = {child.name: rss_mb(child.pid) for child in stack.children}
    return EdgeRun(
        cold_start_s=cold_start_s,
        ready_s=ready_s,
        broker=stack.broker,
        e2e_p50_ms=percentile(sequential, 50),
        e2e_p99_ms=percentile(sequential, 99),
        burst_requests=options.burst,
        burst_errors=errors,
        burst_throughput_per_s=options.burst / burst_seconds,
        burst_cpu_ms_per_request=cpu_ms_per_request,
        memory=memory,
    )


def run_baseline(options: BenchOptions, model_dir: Path, work: Path) -> BaselineRun:
    """The hand-rolled handler (:mod:`fieldlens_bench.baseline_handler`) on its own broker, asked
    by the same client as fieldlens, sequentially, the same number of times."""
    import subprocess
    import sys

    from fieldlens_bench.baseline_handler import REQUESTS, RESPONSES
    from fieldlens_cli.brokers import local_broker
    from fieldlens_cli.stack import connect

    photos = camera_photos(work / "photos")
    with local_broker(work, prefer_mosquitto=True) as (url, _):
        command = [sys.executable, "-m", "fieldlens_bench.baseline_handler", "--broker", url]
        handler = subprocess.Popen(
            [*command, "--model-dir", str(model_dir), "--photos", str(photos), "--variant", options.variant],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert handler.stdout is not None
            if "ready" not in handler.stdout.readline():  # blocks until subscribed, or EOF if it died
                raise RuntimeError(f"the baseline handler did not start (exit {handler.wait(5)})")
            bus = connect(url, "bench-baseline")
            try:
                requester = Requester(bus, REQUESTS, RESPONSES)
                requester.listen()
                latencies = sequential_latencies(requester, options.requests)
            finally:
                bus.stop()
        finally:
            handler.terminate()
            handler.wait(10)
    return BaselineRun(p50_ms=percentile(latencies, 50), p99_ms=percentile(latencies, 99))


def run(options: BenchOptions) -> EdgeResult:
    model_dir = options.data_dir.absolute() / "model"
    ensure_default_model(model_dir)
    package = load_package(model_dir, options.variant)
    emit(f"edge path: {package.card.name} {package.card.version} ({options.variant})")
    runs = max(100, options.requests)
    before = pure_inference(model_dir, options.variant, runs, pinned(options))
    # field images go where a device keeps them (the data directory), not to the temp directory
    options.data_dir.mkdir(parents=True, exist_ok=True)
    edges: list[EdgeRun] = []
    baselines: list[BaselineRun] = []
    for _ in range(options.repeat):
        with tempfile.TemporaryDirectory(prefix=".bench-", dir=options.data_dir) as scratch:
            edges.append(run_edge(options, model_dir, Path(scratch)))
        if options.baseline:  # interleaved with the edge runs, so that drift hits both alike
            with tempfile.TemporaryDirectory(prefix=".bench-", dir=options.data_dir) as scratch:
                baselines.append(run_baseline(options, model_dir, Path(scratch)))
    broker = edges[0].broker
    emit(f"broker: {broker}")
    after = pure_inference(model_dir, options.variant, runs, pinned(options))
    # Shared machines drift: the floor is measured before and after the edge run, and the
    # faster of the two is the baseline, so the ratios are never flattered by a slow floor.
    floor = min(before, after, key=lambda f: f.p50_ms)
    emit(f"pure ONNX Runtime p50: {before.p50_ms:.2f} ms before, {after.p50_ms:.2f} ms after the edge run")
    each = {  # every repeated figure, min / median / max over the runs
        "e2e_p50_ms": Spread.of(e.e2e_p50_ms for e in edges),
        "e2e_p99_ms": Spread.of(e.e2e_p99_ms for e in edges),
        "e2e_p50_over_floor_ms": Spread.of(e.e2e_p50_ms - floor.p50_ms for e in edges),
        "burst_throughput_per_s": Spread.of(e.burst_throughput_per_s for e in edges),
        "throughput_ratio": Spread.of(e.burst_throughput_per_s / floor.throughput_per_s for e in edges),
        "burst_errors": Spread.of(e.burst_errors for e in edges),
        "cold_start_s": Spread.of(e.cold_start_s for e in edges),
    }
    if baselines:
        each |= {
            "baseline_p50_ms": Spread.of(b.p50_ms for b in baselines),
            "baseline_p99_ms": Spread.of(b.p99_ms for b in baselines),
            "ratio_to_baseline": Spread.of(e.e2e_p50_ms / b.p50_ms for e, b in zip(edges, baselines, strict=True)),
        }
    return EdgeResult(
        model=f"{package.card.name} {package.card.version} {options.variant}",
        broker=broker,
        floor=floor,
        cold_start_s=statistics.median(e.cold_start_s for e in edges),
        ready_s=statistics.median(e.ready_s for e in edges),
        e2e_p50_ms=statistics.median(e.e2e_p50_ms for e in edges),
        e2e_p99_ms=statistics.median(e.e2e_p99_ms for e in edges),
        burst_requests=options.burst,
        burst_errors=statistics.median(e.burst_errors for e in edges),
        burst_throughput_per_s=statistics.median(e.burst_throughput_per_s for e in edges),
        burst_cpu_ms_per_request={
            name: statistics.median(e.burst_cpu_ms_per_request[name] for e in edges)
            for name in edges[0].burst_cpu_ms_per_request
        },
        memory={  # the largest seen
            name: Memory(
                rss_mb=max(e.memory[name].rss_mb for e in edges),
                peak_rss_mb=max(e.memory[name].peak_rss_mb for e in edges),
            )
            for name in edges[0].memory
        },
        repeats=len(edges),
        each=each,
    )


def report(r: EdgeResult) -> None:
    memory, each = r.memory, r.each

    def three(key: str, form: str) -> str:
        """median (min-max) over the repeated runs."""
        values = each[key]
        return f"{form.format(values.median)} ({form.format(values.min)}-{form.format(values.max)})"

    rows = [
        ("pure inference p50 / p99 (floor)", f"{r.floor.p50_ms:.2f} / {r.floor.p99_ms:.2f} ms", ""),
        ("pure inference throughput", f"{r.floor.throughput_per_s:.1f} /s", ""),
        ("end-to-end p50", three("e2e_p50_ms", "{:.2f}") + " ms", ""),
        ("end-to-end p99", three("e2e_p99_ms", "{:.2f}") + " ms", ""),
        (
            "end-to-end p50 over the floor",
            three("e2e_p50_over_floor_ms", "{:.2f}") + " ms",
            f"<= {TARGETS['e2e_p50_over_floor_ms']} ms",
        ),
        (f"burst of {r.burst_requests} concurrent requests", three("burst_throughput_per_s", "{:.1f}") + " /s", ""),
        ("burst: answered BUSY or failed", three("burst_errors", "{:.0f}"), "0"),
        (
            "burst throughput / pure inference",
            three("throughput_ratio", "{:.0%}"),
            f">= {TARGETS['throughput_ratio']:.0%}",
        ),
        (
            "classifier RSS (peak)",
            f"{memory['classifier'].rss_mb:.0f} MB ({memory['classifier'].peak_rss_mb:.0f})",
            f"<= {TARGETS['classifier_rss_mb']:.0f} MB",
        ),
        (
            "inference service RSS (peak)",
            f"{memory['inference'].rss_mb:.0f} MB ({memory['inference'].peak_rss_mb:.0f})",
            f"<= {TARGETS['inference_rss_mb']:.0f} MB",
        ),
        (
            "cold start: spawn -> first answer",
            three("cold_start_s", "{:.2f}") + " s",
            f"<= {TARGETS['cold_start_s']} s",
        ),
    ]
    if "ratio_to_baseline" in each:
        rows += [
            ("hand-rolled handler p50 (same client, same run)", three("baseline_p50_ms", "{:.2f}") + " ms", ""),
            ("hand-rolled handler p99", three("baseline_p99_ms", "{:.2f}") + " ms", ""),
            (
                "end-to-end p50, fieldlens / hand-rolled",
                three("ratio_to_baseline", "{:.2f}"),
                f"<= {TARGETS['ratio_to_baseline']}",
            ),
        ]
    emit("")
    emit(f"| measure: median (min-max) over {r.repeats} run{'s' if r.repeats != 1 else ''} | result | target |")
    emit("| --- | --- | --- |")
    for name, value, target in rows:
        emit(f"| {name} | {value} | {target} |")
    emit("")
    emit(
        "CPU time per request during the burst: "
        + ", ".join(f"{name} {ms:.2f} ms" for name, ms in r.burst_cpu_ms_per_request.items())
    )
