"""What the parts that start the components share: the camera's photos, the floor, memory, the stack.

Every such part runs the same stack (:func:`serve_options`) over the same folder camera of
400x400 JPEGs, the seed's resolution (:func:`camera_photos`), and compares with the same floor,
pure ONNX Runtime on a ready tensor (:func:`pure_inference`).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from fieldlens_bench.common import Floor, Memory, percentile
from fieldlens_cli.requester import Pending
from fieldlens_cli.supervisor import ServeOptions
from fieldlens_core.config import private_socket
from fieldlens_core.model_package import load_package

CAMERA_SIZE = (400, 400)


def pure_inference(model_dir: Path, variant: str, runs: int, cpus: tuple[int, ...] | None = None) -> Floor:
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


def _time_session(session: Any, size: int, runs: int) -> Floor:
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal((1, 3, size, size), np.float32)}
    for _ in range(10):
        session.run(None, feed)
    latencies = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feed)
        latencies.append((time.perf_counter() - started) * 1000)
    mean = statistics.fmean(latencies)
    return Floor(p50_ms=percentile(latencies, 50), p99_ms=percentile(latencies, 99), throughput_per_s=1000 / mean)


def camera_photos(folder: Path) -> Path:
    """The sample photos, cropped to the camera's 400x400, as the folder camera's JPEGs."""
    from PIL import ImageOps

    from fieldlens_samples.photos import sample_photos

    folder.mkdir(parents=True, exist_ok=True)
    for name, image in sample_photos().items():
        ImageOps.fit(image, CAMERA_SIZE).save(folder / f"{name}.jpg", format="JPEG", quality=90)
    return folder


def rss_mb(pid: int) -> Memory:
    """Resident memory now and its peak (VmHWM), from /proc."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Vm")
    )
    return Memory(rss_mb=int(fields["VmRSS"].split()[0]) / 1024, peak_rss_mb=int(fields["VmHWM"].split()[0]) / 1024)


def wait_all(pending: list[Pending], timeout_s: float) -> list[dict[str, Any]]:
    """Every answer, in order, all within ``timeout_s``; a missing one fails the run."""
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
