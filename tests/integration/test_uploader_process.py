"""The uploader component as a real process against moto's S3 server: kill -9, outages, restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from fieldlens_cli.brokers import free_port
from fieldlens_fielddata.directory import FieldDataDir
from tests.helpers.broker import Mosquitto
from tests.helpers.field_data import keep_images
from tests.helpers.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.broker]

BUCKET = "fieldlens-itest"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "eu-west-1",
}


@pytest.fixture
def moto_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ThreadedMotoServer, str, Any]]:
    for name, value in FAKE_AWS.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-1")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    yield server, endpoint, s3
    server.stop()


def start_uploader(field: Path, endpoint: str, broker: str, log: Path) -> subprocess.Popen[bytes]:
    arguments = [
        sys.executable,
        "-m",
        "fieldlens_uploader.main",
        "--broker",
        broker,
        "--field-data",
        str(field),
        "--thing-name",
        "coop-1",
        "--bucket",
        BUCKET,
        "--endpoint-url",
        endpoint,
        "--region",
        "eu-west-1",
        "--poll-interval",
        "0.2",
        "--retry-initial",
        "0.2",
        "--retry-max",
        "0.5",
    ]
    return subprocess.Popen(arguments, stdout=subprocess.DEVNULL, stderr=log.open("a"), env={**os.environ, **FAKE_AWS})


def versions(s3: Any) -> list[str]:
    keys = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=BUCKET):
        keys += [v["Key"] for v in page.get("Versions", [])]
    return keys


def test_kill_9_mid_batch_then_restart_loses_nothing_and_duplicates_nothing(
    moto_server: tuple[ThreadedMotoServer, str, Any], mosquitto: Mosquitto, tmp_path: Path
) -> None:
    _, endpoint, s3 = moto_server
    kept = keep_images(tmp_path / "field", 300)
    log = tmp_path / "uploader.log"
    uploader = start_uploader(tmp_path / "field", endpoint, mosquitto.url, log)
    wait_until(lambda: len(versions(s3)) >= 60, what="first uploads")
    os.kill(uploader.pid, signal.SIGKILL)
    uploader.wait(10)
    assert FieldDataDir(tmp_path / "field").queue_stats().queued > 0, "killed too late to test anything"

    uploader = start_uploader(tmp_path / "field", endpoint, mosquitto.url, log)
    try:
        wait_until(
            lambda: FieldDataDir(tmp_path / "field").queue_stats().queued == 0, timeout_s=60, what="queue drained"
        )
    finally:
        uploader.send_signal(signal.SIGTERM)
        assert uploader.wait(30) == 0
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for item in page.get("Contents", [])
    ]
    assert len(keys) == len(set(keys)) == 600  # every image and sidecar, once
    assert len(versions(s3)) - 600 <= 2 * 8  # at most what was in flight at the kill was sent again
    for item in kept[::50]:
        key = f"field-data/coop-1/{item.image_path.parent.relative_to(tmp_path / 'field')}/{item.image_path.name}"
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == item.image_path.read_bytes()
        assert item.image_path.with_suffix(".uploaded").exists()


def test_s3_down_for_a_stretch_then_back(
    moto_server: tuple[ThreadedMotoServer, str, Any], mosquitto: Mosquitto, tmp_path: Path
) -> None:
    server, endpoint, s3 = moto_server
    server.stop()  # S3 unreachable from the start
    keep_images(tmp_path / "field", 20)
    log = tmp_path / "uploader.log"
    uploader = start_uploader(tmp_path / "field", endpoint, mosquitto.url, log)
    try:
        wait_until(lambda: log.read_text().count("retrying in") >= 2, what="backing off while S3 is down")
        assert FieldDataDir(tmp_path / "field").queue_stats().queued == 20
        server.start()  # moto keeps its state in this process: the bucket is still there
        wait_until(
            lambda: FieldDataDir(tmp_path / "field").queue_stats().queued == 0,
            timeout_s=60,
            what="drained after S3 returned",
        )
    finally:
        uploader.send_signal(signal.SIGTERM)
        uploader.wait(30)
    assert len(versions(s3)) == 40
