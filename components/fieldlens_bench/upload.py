"""The field-data half of `fieldlens bench`: upload throughput and the uploader's memory.

Throughput: the same pairs (400x400 photos and their sidecars) sent to moto's S3 server on
127.0.0.1, first by a plain sequential ``put_object`` loop (the baseline), then by the
uploader (concurrent, with checksums, encryption and receipts), in one run.

Memory: peak RSS of a fresh process that scans and drains a queue of 100 and of 10,000
pairs (against an S3 that is down, so the queue stays full), to show it is flat in queue
length.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fieldlens_bench.common import Result
from fieldlens_bench.harness import camera_photos
from fieldlens_bench.runner import BenchOptions
from fieldlens_cli.brokers import free_port
from fieldlens_cli.output import emit
from fieldlens_fielddata.destination import S3Destination
from fieldlens_fielddata.directory import new_image_id
from fieldlens_fielddata.sidecar import Observation
from fieldlens_fielddata.store import FieldStore
from fieldlens_fielddata.uploader import Uploader

FAKE_AWS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "eu-west-1"}
BUCKET = "fieldlens-bench"
START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Throughput:
    """The same pairs shipped one put at a time, then by the uploader, over one simulated round trip."""

    pairs: int
    sequential_pairs_per_s: float
    uploader_pairs_per_s: float
    ratio: float
    concurrency: int
    rtt_ms: float


@dataclass(frozen=True)
class UploadResult(Result):
    throughput: list[Throughput]
    memory_mb: dict[str, float]
    """Pairs queued (as text, for JSON) -> the uploader's peak RSS draining them."""


def fill(root: Path, count: int, photos: list[bytes]) -> None:
    store = FieldStore(root, "bench")
    for index in range(count):
        when = START + timedelta(seconds=index)
        store.keep(new_image_id(when), when, photos[index % len(photos)], Observation(prediction="x", confidence=0.5))


def s3_client(endpoint: str, rtt_s: float) -> Any:
    """A client whose every request first waits ``rtt_s``: a stand-in for the network between a device and S3."""
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-1", config=Config(max_pool_connections=32))
    if rtt_s > 0:
        client.meta.events.register("before-send.s3.*", lambda **_: time.sleep(rtt_s))
    return client


def wait_for_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def throughput(pairs: int, photos: list[bytes], concurrency: int, rtt_s: float) -> Throughput:
    os.environ.update(FAKE_AWS)
    port = free_port()
    # moto's server in its own process, as S3 is: in this process it would share our GIL
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{endpoint}/moto-api/", 30)
        client = s3_client(endpoint, rtt_s)
        bucket = f"{BUCKET}-{int(rtt_s * 1000)}ms"
        client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        with tempfile.TemporaryDirectory(prefix="fl-upload-bench-") as scratch:
            root = Path(scratch) / "field"
            fill(root, pairs, photos)
            files = sorted(p for p in root.rglob("*") if p.suffix in (".jpg", ".json"))
            started = time.perf_counter()
            for path in files:  # the baseline: what the seed's Lambda did, one put at a time
                client.put_object(Bucket=bucket, Key=f"baseline/{path.name}", Body=path.read_bytes())
            sequential = time.perf_counter() - started

            uploader = Uploader(root, S3Destination(client, bucket), "bench", concurrency=concurrency)
            started = time.perf_counter()
            report = uploader.drain()
            concurrent = time.perf_counter() - started
            uploader.close()
            if report.uploaded != pairs:
                raise RuntimeError(f"uploader shipped {report.uploaded} of {pairs}: {report.error}")
    finally:
        server.terminate()
        server.wait(10)
    return Throughput(
        pairs=pairs,
        sequential_pairs_per_s=pairs / sequential,
        uploader_pairs_per_s=pairs / concurrent,
        ratio=sequential / concurrent,
        concurrency=concurrency,
        rtt_ms=rtt_s * 1000,
    )


def memory(queued: int) -> float:
    """Peak RSS (MB) of a fresh process draining a queue of ``queued`` pairs against an S3 that is down."""
    with tempfile.TemporaryDirectory(prefix="fl-upload-mem-") as scratch:
        root = Path(scratch) / "field"
        fill(root, queued, [b"\xff\xd8\xff" + b"x" * 500])
        result = subprocess.run(
            [sys.executable, "-m", "fieldlens_bench.upload", "probe", str(root)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **FAKE_AWS},
        )
        return float(json.loads(result.stdout)["peak_rss_mb"])


def probe(root: Path) -> None:
    """Runs in the child: the uploader's real work on a full queue, S3 unreachable."""

    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region_name="eu-west-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    uploader = Uploader(root, S3Destination(client, BUCKET), "bench")
    for _ in range(3):
        uploader.drain()
        status = uploader.status()
    uploader.close()
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork and exec
    status_lines = Path("/proc/self/status").read_text().splitlines()
    peak = int(next(line for line in status_lines if line.startswith("VmHWM")).split()[1]) / 1024
    sys.stdout.write(json.dumps({"peak_rss_mb": peak, "queued": status["queued"]}) + "\n")


def run(options: BenchOptions, pairs: int = 200, concurrency: int = 8) -> UploadResult:
    """Throughput against moto's S3 with simulated round trips, and the uploader's memory."""
    emit("\nfield-data upload: moto's S3 server on 127.0.0.1 (its own process), 400x400 photos")
    with tempfile.TemporaryDirectory(prefix="fl-photos-") as scratch:
        photos = [path.read_bytes() for path in sorted(camera_photos(Path(scratch)).iterdir())]
    return measure(photos, pairs, concurrency)


def measure(photos: list[bytes], pairs: int = 200, concurrency: int = 8) -> UploadResult:
    shipped = [throughput(pairs, photos, concurrency, rtt) for rtt in (0.0, 0.02, 0.05)]
    return UploadResult(throughput=shipped, memory_mb={str(n): memory(n) for n in (100, 10_000)})


def report(r: UploadResult) -> None:
    emit("")
    emit("| network round trip (simulated) | sequential put_object loop | uploader (8 in flight) | ratio | target |")
    emit("| --- | --- | --- | --- | --- |")
    for row in r.throughput:
        emit(
            f"| {row.rtt_ms:.0f} ms | {row.sequential_pairs_per_s:.1f} pairs/s | "
            f"{row.uploader_pairs_per_s:.1f} pairs/s | {row.ratio:.1f}x | >= 3x |"
        )
    memory = r.memory_mb
    emit(f"\nuploader peak RSS: {memory['100']:.1f} MB with 100 queued, {memory['10000']:.1f} MB with 10,000 queued")


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "probe":
    probe(Path(sys.argv[2]))
