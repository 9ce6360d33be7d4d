"""The uploader against moto's S3 (in process), with faults injected through a wrapping destination."""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError

from fieldlens_fielddata.destination import LocalDirectoryDestination, S3Destination, sha256_b64
from fieldlens_fielddata.directory import new_image_id
from fieldlens_fielddata.sidecar import Observation
from fieldlens_fielddata.store import FieldStore
from fieldlens_fielddata.uploader import Uploader
from tests.helpers.field_data import START, keep_images
from tests.helpers.small_disk import fill, small_disk

BUCKET = "fieldlens-test-bucket"


@pytest.fixture
def s3(aws: None) -> Any:
    client = boto3.client("s3", region_name="eu-west-1", config=Config(retries={"max_attempts": 1}))
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return client


class FlakyDestination:
    """Delegates to a real destination; fails while `down`, counting every put it was asked for."""

    def __init__(self, inner: Any, error: Exception, down_after: int | None = None) -> None:
        self.inner, self.error = inner, error
        self.description = inner.description
        self.down = False
        self.down_after = down_after  # goes down by itself after this many puts
        self.puts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def put(self, key: str, body: bytes, content_type: str, metadata: dict[str, str]) -> None:
        with self._lock:
            if self.down_after is not None and sum(self.puts.values()) >= self.down_after:
                self.down = True
            if self.down:
                raise self.error
            self.puts[key] += 1
        self.inner.put(key, body, content_type, metadata)

    def keys(self, prefix: str) -> Any:
        return self.inner.keys(prefix)


def bucket_keys(s3: Any) -> list[str]:
    return sorted(item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def test_keys_metadata_encryption_and_checksums(s3: Any, tmp_path: Path) -> None:
    kept = keep_images(tmp_path, 2, thing="coop-1")
    headers: list[dict[str, str]] = []

    def record(request: Any, **_: Any) -> None:
        headers.append({k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()})

    s3.meta.events.register("before-send.s3.PutObject", record)
    uploader = Uploader(tmp_path, S3Destination(s3, BUCKET), "coop-1")
    report = uploader.drain()
    assert (report.uploaded, report.failed, report.error) == (2, 0, None)

    first = kept[0]
    image_key = f"field-data/coop-1/2026/11/20/{first.image_id}.jpg"
    assert bucket_keys(s3) == sorted(
        [
            image_key,
            image_key[:-4] + ".json",
            *[f"field-data/coop-1/2026/11/20/{kept[1].image_id}.{s}" for s in ("jpg", "json")],
        ]
    )
    head = s3.head_object(Bucket=BUCKET, Key=image_key)
    assert head["ServerSideEncryption"] == "AES256" and head["ContentType"] == "image/jpeg"
    assert head["Metadata"]["thing"] == "coop-1" and head["Metadata"]["prediction"] == "hen"
    assert head["Metadata"]["model-version"] == "1.0.0" and head["Metadata"]["request-id"] == "r0"
    body = s3.get_object(Bucket=BUCKET, Key=image_key)["Body"].read()
    assert body == first.image_path.read_bytes()
    sent = [h for h in headers if h.get("x-amz-checksum-sha256") == sha256_b64(body)]
    assert len(sent) == 1  # S3 itself refuses the object if the bytes it got do not match
    receipt = json.loads(first.image_path.with_suffix(".uploaded").read_text())
    assert receipt["key"] == image_key and receipt["destination"] == f"s3://{BUCKET}"
    assert uploader.drain().uploaded == 0  # receipts take pairs out of the queue


def test_kms_encryption_names_the_key(s3: Any, tmp_path: Path) -> None:
    keep_images(tmp_path, 1)
    kms = boto3.client("kms", region_name="eu-west-1").create_key()["KeyMetadata"]["KeyId"]
    Uploader(tmp_path, S3Destination(s3, BUCKET, "aws:kms", kms), "coop-1").drain()
    head = s3.head_object(Bucket=BUCKET, Key=bucket_keys(s3)[0])
    assert head["ServerSideEncryption"] == "aws:kms" and kms in head["SSEKMSKeyId"]


def test_delete_after_upload_removes_the_local_pair(s3: Any, tmp_path: Path) -> None:
    kept = keep_images(tmp_path, 3)
    Uploader(tmp_path, S3Destination(s3, BUCKET), "coop-1", delete_after_upload=True).drain()
    assert len(bucket_keys(s3)) == 6
    assert not any(k.image_path.exists() or k.sidecar_path.exists() for k in kept)


@pytest.mark.parametrize(
    "error",
    [
        EndpointConnectionError(endpoint_url="https://s3.eu-west-1.amazonaws.com"),
        ClientError({"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObject"),
    ],
)
def test_an_outage_keeps_everything_queued_and_every_image_arrives_once_after(
    s3: Any, tmp_path: Path, error: Exception
) -> None:
    kept = keep_images(tmp_path, 40)
    flaky = FlakyDestination(S3Destination(s3, BUCKET), error, down_after=16)
    uploader = Uploader(tmp_path, flaky, "coop-1", concurrency=1, chunk=8)
    first = uploader.drain()
    assert first.uploaded == 8 and first.outage  # S3 went away after one chunk
    for _ in range(3):  # S3 down for a stretch: each attempt fails, nothing is lost
        report = uploader.drain()
        assert report.outage and report.uploaded == 0 and type(error).__name__ in (report.error or "")
        assert all(k.image_path.exists() and k.sidecar_path.exists() for k in kept)
    flaky.down, flaky.down_after = False, None
    assert uploader.drain().uploaded == 32
    keys = bucket_keys(s3)
    assert len(keys) == 80 and len(set(keys)) == 80
    assert max(flaky.puts.values()) == 1  # no key was ever sent twice
    assert all(k.image_path.with_suffix(".uploaded").exists() for k in kept)
    status = uploader.status()
    assert (status["queued"], status["uploaded"], status["failed"]) == (0, 40, 8 + 3 * 8)


def test_unreadable_pairs_are_quarantined_with_a_clear_log_line(
    s3: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corrupt, missing, good = keep_images(tmp_path, 3)
    corrupt.sidecar_path.write_text("{half a sidecar")
    missing.image_path.unlink()
    report = Uploader(tmp_path, S3Destination(s3, BUCKET), "coop-1").drain()
    assert (report.uploaded, report.quarantined) == (1, 2)
    assert bucket_keys(s3) == sorted(
        [f"field-data/coop-1/2026/11/20/{good.image_id}.jpg", f"field-data/coop-1/2026/11/20/{good.image_id}.json"]
    )
    quarantine = sorted(p.name for p in (tmp_path / "quarantine").iterdir())
    assert quarantine == sorted([corrupt.image_path.name, corrupt.sidecar_path.name, missing.sidecar_path.name])
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(corrupt.image_id in m and "not JSON" in m for m in messages)
    assert any(missing.image_id in m and "image is missing" in m for m in messages)


def test_without_a_bucket_a_local_directory_stands_in(tmp_path: Path) -> None:
    kept = keep_images(tmp_path / "field", 2)
    destination = LocalDirectoryDestination(tmp_path / "bucket")
    uploader = Uploader(tmp_path / "field", destination, "coop-1")
    assert uploader.drain().uploaded == 2
    assert (tmp_path / "bucket/field-data/coop-1/2026/11/20" / kept[0].image_path.name).read_bytes() == kept[
        0
    ].image_path.read_bytes()
    assert "no bucket configured" in uploader.status()["destination"]
    assert next(k for k, _ in destination.keys("field-data")).startswith("field-data/coop-1/2026/11/20/")


def test_status_and_receipts_use_the_responses_timestamp_format(tmp_path: Path) -> None:
    """One format across the product: ISO 8601 UTC, milliseconds, a Z (as in every response)."""
    import re

    keep_images(tmp_path / "field", 1)
    uploader = Uploader(tmp_path / "field", LocalDirectoryDestination(tmp_path / "bucket"), "coop-1")
    uploader.drain()
    pattern = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
    assert pattern.match(uploader.status(now=1_795_000_000.25)["timestamp"])
    receipt = json.loads(next((tmp_path / "field").rglob("*.uploaded")).read_text())
    assert pattern.match(receipt["uploaded_at"])


class RefusesOne(LocalDirectoryDestination):
    """S3 as it answers one object it will never take (here: InvalidArgument), or a whole bucket it refuses."""

    def __init__(self, root: Path, refused: str, code: str, status: int) -> None:
        super().__init__(root)
        self.refused, self.code, self.status = refused, code, status

    def put(self, key: str, body: bytes, content_type: str, metadata: dict[str, str]) -> None:
        if self.refused in key:
            error = {"Error": {"Code": self.code, "Message": "no"}, "ResponseMetadata": {"HTTPStatusCode": self.status}}
            raise ClientError(error, "PutObject")
        super().put(key, body, content_type, metadata)


def test_a_pair_s3_refuses_alone_is_quarantined_and_the_queue_goes_on(tmp_path: Path) -> None:
    kept = keep_images(tmp_path / "field", 4)
    destination = RefusesOne(tmp_path / "bucket", kept[0].image_id, "InvalidArgument", 400)  # the oldest
    report = Uploader(tmp_path / "field", destination, "coop-1").drain()
    assert (report.uploaded, report.quarantined, report.failed) == (3, 1, 0)
    assert (tmp_path / "field/quarantine" / kept[0].image_path.name).exists()  # kept locally, not lost


def test_a_bucket_that_refuses_everything_keeps_everything_queued(tmp_path: Path) -> None:
    kept = keep_images(tmp_path / "field", 3)
    destination = RefusesOne(tmp_path / "bucket", "coop-1", "AccessDenied", 403)  # every key
    report = Uploader(tmp_path / "field", destination, "coop-1").drain()
    assert report.quarantined == 0 and report.failed >= 1 and report.outage
    assert all(k.sidecar_path.exists() for k in kept) and not (tmp_path / "field/quarantine").exists()


def test_pairs_go_to_the_key_the_classifier_reported_whatever_its_prefix(tmp_path: Path) -> None:
    """The key is computed once (by the store, into the sidecar and the response): a classifier
    configured with another s3Prefix than the uploader's once got responses naming wrong keys."""
    store = FieldStore(tmp_path / "field", "coop-1", s3_prefix="farm-7/images")
    kept = store.keep(new_image_id(START), START, b"\xff\xd8jpeg", Observation(prediction="hen"))
    destination = LocalDirectoryDestination(tmp_path / "bucket")
    assert Uploader(tmp_path / "field", destination, "coop-1").drain().uploaded == 1
    assert sorted(k for k, _ in destination.keys("")) == [kept.s3_key, kept.s3_key[:-4] + ".json"]
    assert kept.s3_key.startswith("farm-7/images/coop-1/2026/11/20/")


@pytest.mark.parametrize(
    "key",
    [
        "field-data/another-device/2026/11/20/{id}.jpg",  # another thing's place
        "field-data/coop-1/2026/11/21/{id}.jpg",  # another day
        "field-data/coop-1/2026/11/20/20261120T080000000Z-0000.jpg",  # another image
        "field-data/coop-1/../coop-1/2026/11/20/{id}.jpg",
        "/coop-1/2026/11/20/{id}.jpg",
    ],
)
def test_a_sidecar_naming_a_key_that_is_not_its_own_is_quarantined(tmp_path: Path, key: str) -> None:
    (kept,) = keep_images(tmp_path / "field", 1)
    sidecar = json.loads(kept.sidecar_path.read_text())
    kept.sidecar_path.write_text(json.dumps({**sidecar, "s3_key": key.format(id=kept.image_id)}))
    destination = LocalDirectoryDestination(tmp_path / "bucket")
    report = Uploader(tmp_path / "field", destination, "coop-1").drain()
    assert (report.uploaded, report.quarantined) == (0, 1)
    assert list(destination.keys("")) == []


def shipped_once_with_no_room_for_receipts(root: Path, bucket: Path) -> FlakyDestination:
    """Drain three times while receipts cannot be written; returns the destination that counted the puts."""
    destination = FlakyDestination(LocalDirectoryDestination(bucket), RuntimeError("unused"))
    uploader = Uploader(root, destination, "coop-1")
    try:
        for _ in range(3):
            uploader.drain()
    finally:
        uploader.close()
    return destination


def test_a_receipt_that_cannot_be_written_stops_that_pairs_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """ENOSPC injected at the file layer, for receipts only: each pair is put once, then removed
    locally (it is in the bucket), so neither the uploader nor the store's eviction is stuck."""
    import errno

    from fieldlens_core.atomic import atomic_write as real_write

    kept = keep_images(tmp_path / "field", 5)

    def full_disk_for_receipts(path: Path, data: bytes, **kwargs: Any) -> None:
        if path.suffix == ".uploaded":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, data, **kwargs)

    monkeypatch.setattr("fieldlens_fielddata.directory.atomic_write", full_disk_for_receipts)
    with caplog.at_level(logging.ERROR):
        destination = shipped_once_with_no_room_for_receipts(tmp_path / "field", tmp_path / "bucket")
    assert len(destination.puts) == 10 and set(destination.puts.values()) == {1}
    assert not any(k.image_path.exists() or k.sidecar_path.exists() for k in kept)
    assert len(list((tmp_path / "bucket").rglob("*.jpg"))) == 5
    receipt_lines = [r for r in caplog.records if "cannot write upload receipts" in r.getMessage()]
    assert len(receipt_lines) == 1 and "No space left on device" in receipt_lines[0].getMessage()


def test_on_a_really_full_tmpfs_every_pair_is_shipped_once(tmp_path: Path) -> None:
    """The same on a real 1 MiB tmpfs filled to the last byte (root only; skipped where mounting is not allowed)."""
    with small_disk(tmp_path / "small-disk") as mount:
        kept = keep_images(mount / "field", 8)
        fill(mount)  # every block left, so no receipt fits
        destination = shipped_once_with_no_room_for_receipts(mount / "field", tmp_path / "bucket")
        assert len(destination.puts) == 16 and set(destination.puts.values()) == {1}
        removed = [k for k in kept if not k.sidecar_path.exists()]
        assert removed  # the first pairs made the room that lets the later ones keep a receipt
        assert all(k.sidecar_path.with_suffix(".uploaded").exists() for k in kept if k not in removed)
