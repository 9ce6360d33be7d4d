"""`fieldlens bench`, the edge path: speed and memory, every figure measured in this one run.

Baselines come from the same run: pure ONNX Runtime inference on a ready tensor is the
floor that end-to-end latency and throughput are compared with. End to end means: publish
on the broker -> classifier -> camera (folder of 400x400 JPEGs, the seed's resolution) ->
inference service over its socket -> image and sidecar kept with fsync -> response
received by the requester.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from fieldlens_cli.model_commands import ensure_default_model
from fieldlens_cli.output import emit
from fieldlens_cli.requester import Pending, Requester
from fieldlens_cli.stack import local_stack
from fieldlens_cli.supervisor import ServeOptions
from fieldlens_core.config import private_socket
from fieldlens_core.model_package import load_package

CAMERA_SIZE = (400, 400)
TARGETS = {  # the goals the README's speed table is held to
    "e2e_p50_over_floor_ms": 3.0,
    "throughput_ratio": 0.85,
    "ratio_to_baseline": 1.0,
    "classifier_rss_mb": 128.0,
    "inference_rss_mb": 200.0,
    "cold_start_s": 3.0,
}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def pure_inference(model_dir: Path, variant: str, runs: int, cpus: tuple[int, ...] | None = None) -> dict[str, float]:
    """The floor: ONNX Runtime alone, default session options, on a ready tensor, nothing else running;
    with ``cpus``, on those CPUs only and with as many threads (the components' budget)."""
    import onnxruntime as ort

    package = load_package(model_dir, variant)
    options = ort.SessionOptions()
    everywhere = os.sched_getaffinity(0)
    if cpus:
        options.intra_op_num_threads = len(cpus)
        os.sched_setaffinity(0, cpus)  # ORT's threads start with the session: they inherit this
    try:
        session = ort.InferenceSession(str(package.model_path), options, providers=["CPUExecutionProvider"])
        return _time_session(session, package.card.input.size, runs)
    finally:
        os.sched_setaffinity(0, everywhere)


def _time_session(session: Any, size: int, runs: int) -> dict[str, float]:
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal((1, 3, size, size), np.float32)}
    for _ in range(10):
        session.run(None, feed)
    latencies = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feed)
        latencies.append((time.perf_counter() - started) * 1000)
    mean = statistics.fmean(latencies)
    return {"p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99), "throughput_per_s": 1000 / mean}


def camera_photos(folder: Path) -> Path:
    from PIL import ImageOps

    from fieldlens_samples.photos import sample_photos

    folder.mkdir(parents=True, exist_ok=True)
    for name, image in sample_photos().items():
        ImageOps.fit(image, CAMERA_SIZE).save(folder / f"{name}.jpg", format="JPEG", quality=90)
    return folder


def rss_mb(pid: int) -> dict[str, float]:
    """Resident memory now and its peak (VmHWM), from /proc."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Vm")
    )
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "peak_rss_mb": int(fields["VmHWM"].split()[0]) / 1024}


def wait_all(pending: list[Pending], timeout_s: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    out = []
    for item in pending:
        response = item.wait(max(0.0, deadline - time.monotonic()))
        if response is None:
            raise RuntimeError(f"request {item.request_id} got no response within {timeout_s}s")
        out.append(response)
    return out


def serve_options(
    url: str, name: str, photos: Path, work: Path, model_dir: Path, variant: str, **extra: Any
) -> ServeOptions:
    """The stack every bench part runs: the folder camera over ``photos``, field data in the
    scratch directory ``work``, components logging warnings only; ``extra`` for the part's own."""
    return ServeOptions(
        broker=url,
        name=name,
        camera=f"folder:{photos}",
        field_data=work / "field",
        model_dir=model_dir,
        socket_path=private_socket(f"bench-{name}-{os.getpid()}"),
        service_name="bench",
        variant=variant,
        thing_name="bench",
        log_level="WARNING",
        **extra,
    )


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


def run_edge(args: argparse.Namespace, model_dir: Path, work: Path) -> dict[str, Any]:
    photos = camera_photos(work / "photos")
    cpus = pinned(args)  # before this process moves off them

    def options(url: str) -> ServeOptions:
        return serve_options(
            url,
            "bench",
            photos,
            work,
            model_dir,
            args.variant,
            queue_size=None,  # the default configuration: admission by time must take the burst
            workers=args.workers,
            allow_spinning=args.spinning,
            cpus=cpus,
        )

    everywhere = os.sched_getaffinity(0)
    rest = everywhere - set(cpus or ())
    if cpus and rest:
        os.sched_setaffinity(0, rest)  # the requester (and the broker it starts) off the device's CPUs
    try:
        return _edge_on(options, args)
    finally:
        os.sched_setaffinity(0, everywhere)


def pinned(args: argparse.Namespace) -> tuple[int, ...] | None:
    """``--cpus N``: the first N CPUs this process may use, for the components (a Pi-sized budget)."""
    return tuple(sorted(os.sched_getaffinity(0))[: args.cpus]) if args.cpus else None


def _edge_on(options: Callable[[str], ServeOptions], args: argparse.Namespace) -> dict[str, Any]:
    with local_stack(options, "bench", prefer_mosquitto=True) as stack:
        requester = stack.requester()
        first = requester.send(b"{}")
        wait_all([first], 30)
        cold = {"cold_start_s": first.received_at - stack.launched_at, "ready_s": stack.ready_at - stack.launched_at}

        sequential = sequential_latencies(requester, args.requests)

        processes = {child.name: psutil.Process(child.pid) for child in stack.children}
        processes["requester (this process)"] = psutil.Process()
        cpu_before = {name: sum(p.cpu_times()[:2]) for name, p in processes.items()}
        burst_started = time.perf_counter()
        burst = [requester.send(b"{}") for _ in range(args.burst)]
        responses = wait_all(burst, 300)
        burst_seconds = max(p.received_at for p in burst) - burst_started
        cpu_ms_per_request = {
            name: (sum(p.cpu_times()[:2]) - cpu_before[name]) * 1000 / args.burst for name, p in processes.items()
        }
        errors = sum(1 for r in responses if "error" in r)
        memory = {child.name: rss_mb(child.pid) for child in stack.children}
    return {
        **cold,
        "broker": stack.broker,
        "e2e_p50_ms": percentile(sequential, 50),
        "e2e_p99_ms": percentile(sequential, 99),
        "burst_requests": args.burst,
        "burst_errors": errors,
        "burst_throughput_per_s": args.burst / burst_seconds,
        "burst_cpu_ms_per_request": cpu_ms_per_request,
        "memory": memory,
    }


def run_baseline(args: argparse.Namespace, model_dir: Path, work: Path) -> dict[str, float]:
    """The hand-rolled handler (:mod:`fieldlens_cli.baseline_handler`) on its own broker, asked
    by the same client as fieldlens, sequentially, the same number of times."""
    import subprocess
    import sys

    from fieldlens_cli.baseline_handler import REQUESTS, RESPONSES
    from fieldlens_cli.brokers import local_broker
    from fieldlens_cli.stack import connect

    photos = camera_photos(work / "photos")
    with local_broker(work, prefer_mosquitto=True) as (url, _):
        command = [sys.executable, "-m", "fieldlens_cli.baseline_handler", "--broker", url]
        handler = subprocess.Popen(
            [*command, "--model-dir", str(model_dir), "--photos", str(photos)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert handler.stdout is not None
            if "ready" not in handler.stdout.readline():  # blocks until subscribed, or EOF if it died
                raise RuntimeError(f"the baseline handler did not start (exit {handler.wait(5)})")
            bus = connect(url, "bench-baseline")
            try:
                requester = Requester(bus, REQUESTS, RESPONSES)
                requester.listen()
                latencies = sequential_latencies(requester, args.requests)
            finally:
                bus.stop()
        finally:
            handler.terminate()
            handler.wait(10)
    return {"p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99)}


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure, the median over the repeated edge runs; memory, the largest seen."""
    merged: dict[str, Any] = {}
    for key, value in runs[0].items():
        if key == "memory":
            merged[key] = {name: {m: max(r["memory"][name][m] for r in runs) for m in value[name]} for name in value}
        elif isinstance(value, dict):
            merged[key] = {k: statistics.median(r[key][k] for r in runs) for k in value}
        else:
            merged[key] = statistics.median(r[key] for r in runs)
    merged["repeats"] = len(runs)
    return merged


def run(args: argparse.Namespace) -> dict[str, Any]:
    model_dir = args.data_dir.absolute() / "model"
    ensure_default_model(model_dir)
    package = load_package(model_dir, args.variant)
    emit(f"edge path: {package.card.name} {package.card.version} ({args.variant})")
    runs = max(100, args.requests)
    before = pure_inference(model_dir, args.variant, runs, pinned(args))
    # field images go where a device keeps them (the data directory), not to the temp directory
    args.data_dir.mkdir(parents=True, exist_ok=True)
    runs_of_edge, baselines = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix=".bench-", dir=args.data_dir) as scratch:
            runs_of_edge.append(run_edge(args, model_dir, Path(scratch)))
        if args.baseline:  # interleaved with the edge runs, so that drift hits both alike
            with tempfile.TemporaryDirectory(prefix=".bench-", dir=args.data_dir) as scratch:
                baselines.append(run_baseline(args, model_dir, Path(scratch)))
    broker_name = runs_of_edge[0].pop("broker")
    for run in runs_of_edge[1:]:
        run.pop("broker")
    emit(f"broker: {broker_name}")
    edge = median_run(runs_of_edge)
    after = pure_inference(model_dir, args.variant, runs, pinned(args))
    # Shared machines drift: the floor is measured before and after the edge run, and the
    # faster of the two is the baseline, so the ratios are never flattered by a slow floor.
    floor = min(before, after, key=lambda f: f["p50_ms"])
    emit(f"pure ONNX Runtime p50: {before['p50_ms']:.2f} ms before, {after['p50_ms']:.2f} ms after the edge run")
    each = {  # every repeated figure, min / median / max over the runs
        "e2e_p50_ms": spread([e["e2e_p50_ms"] for e in runs_of_edge]),
        "e2e_p99_ms": spread([e["e2e_p99_ms"] for e in runs_of_edge]),
        "e2e_p50_over_floor_ms": spread([e["e2e_p50_ms"] - floor["p50_ms"] for e in runs_of_edge]),
        "burst_throughput_per_s": spread([e["burst_throughput_per_s"] for e in runs_of_edge]),
        "throughput_ratio": spread([e["burst_throughput_per_s"] / floor["throughput_per_s"] for e in runs_of_edge]),
        "burst_errors": spread([e["burst_errors"] for e in runs_of_edge]),
        "cold_start_s": spread([e["cold_start_s"] for e in runs_of_edge]),
    }
    if baselines:
        each |= {
            "baseline_p50_ms": spread([b["p50_ms"] for b in baselines]),
            "baseline_p99_ms": spread([b["p99_ms"] for b in baselines]),
            "ratio_to_baseline": spread(
                [e["e2e_p50_ms"] / b["p50_ms"] for e, b in zip(runs_of_edge, baselines, strict=True)]
            ),
        }
    return {
        "model": f"{package.card.name} {package.card.version} {args.variant}",
        "broker": broker_name,
        "floor": floor,
        **edge,
        "each": each,
    }


def report(r: dict[str, Any]) -> None:
    memory, each = r["memory"], r["each"]

    def three(key: str, form: str) -> str:
        """median (min-max) over the repeated runs."""
        values = each[key]
        return f"{form.format(values['median'])} ({form.format(values['min'])}-{form.format(values['max'])})"

    rows = [
        ("pure inference p50 / p99 (floor)", f"{r['floor']['p50_ms']:.2f} / {r['floor']['p99_ms']:.2f} ms", ""),
        ("pure inference throughput", f"{r['floor']['throughput_per_s']:.1f} /s", ""),
        ("end-to-end p50", three("e2e_p50_ms", "{:.2f}") + " ms", ""),
        ("end-to-end p99", three("e2e_p99_ms", "{:.2f}") + " ms", ""),
        (
            "end-to-end p50 over the floor",
            three("e2e_p50_over_floor_ms", "{:.2f}") + " ms",
            f"<= {TARGETS['e2e_p50_over_floor_ms']} ms",
        ),
        (f"burst of {r['burst_requests']} concurrent requests", three("burst_throughput_per_s", "{:.1f}") + " /s", ""),
        ("burst: answered BUSY or failed", three("burst_errors", "{:.0f}"), "0"),
        (
            "burst throughput / pure inference",
            three("throughput_ratio", "{:.0%}"),
            f">= {TARGETS['throughput_ratio']:.0%}",
        ),
        (
            "classifier RSS (peak)",
            f"{memory['classifier']['rss_mb']:.0f} MB ({memory['classifier']['peak_rss_mb']:.0f})",
            f"<= {TARGETS['classifier_rss_mb']:.0f} MB",
        ),
        (
            "inference service RSS (peak)",
            f"{memory['inference']['rss_mb']:.0f} MB ({memory['inference']['peak_rss_mb']:.0f})",
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
    emit(f"| measure: median (min-max) over {r['repeats']} runs | result | target |")
    emit("| --- | --- | --- |")
    for name, value, target in rows:
        emit(f"| {name} | {value} | {target} |")
    emit("")
    emit(
        "CPU time per request during the burst: "
        + ", ".join(f"{name} {ms:.2f} ms" for name, ms in r["burst_cpu_ms_per_request"].items())
    )
