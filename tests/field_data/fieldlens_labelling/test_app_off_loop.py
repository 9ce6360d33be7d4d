"""The page never blocks its event loop: the real page under uvicorn, with work held on an Event.

A label write waits on a bucket whose put is held until the test releases it; an install and a
retrain start are held the same way, and a flood of thumbnails fills its lane. Meanwhile the
other requests must answer: had the work run on the event loop, they would wait with it, and
the client's timeout (a guard against hanging, never a measure) would fail the test.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest

from fieldlens_fielddata.bucket_labels import BucketLabels
from fieldlens_fielddata.directory import FieldDataDir
from fieldlens_fielddata.sidecar import Sidecar
from fieldlens_labelling.app import PICTURE_THREADS
from fieldlens_labelling.client import PageClient
from fieldlens_labelling.serve import LabelServer, PageOptions
from fieldlens_labelling.thumbnails import Thumbnails
from tests.field_data.fieldlens_fielddata.test_bucket_labels import BUCKET, upload_as_the_device
from tests.helpers.labelling import keep_predicted

HANG_GUARD_S = 30.0
"""How long a request or a held call may take before the test calls the page stuck."""
JPEG = b"\xff\xd8"


class Held:
    """A call that says it has started, then waits for the test's release."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def hold(self) -> None:
        self.started.set()
        if not self.release.wait(HANG_GUARD_S):
            raise RuntimeError("never released")


class HeldBucket(BucketLabels):
    """A bucket whose puts each wait for the test: a slow S3 round trip, ended when the test says."""

    def __init__(self, s3: Any, url: str) -> None:
        super().__init__(s3, url)
        self.held = Held()
        self.entered: list[str] = []  # the image ids whose put has begun, in order

    def put(self, sidecar: Sidecar, thing: str | None) -> None:
        self.entered.append(sidecar.image_id)
        self.held.hold()
        super().put(sidecar, thing)


@pytest.fixture
def s3(aws: None) -> Any:
    client = boto3.client("s3", region_name="eu-west-1")
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return client


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(PICTURE_THREADS + 4, thread_name_prefix="client") as executor:
        yield executor


def fetch(server: LabelServer, path: str) -> bytes:
    request = urllib.request.Request(server.base_url + path, headers={"Authorization": f"Bearer {server.token}"})
    with urllib.request.urlopen(request, timeout=HANG_GUARD_S) as response:
        body: bytes = response.read()
        return body


def label_objects(s3: Any) -> dict[str, str | None]:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="labels/").get("Contents", [])
    return {
        o["Key"].rsplit("/", 1)[1].removesuffix(".json"): json.loads(
            s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
        )["label"]
        for o in listed
    }


def assert_the_page_answers(server: LabelServer, client: PageClient, key: str, image: bytes) -> None:
    """State, items, a thumbnail and the image of ``key``: what the page asks for around a write."""
    assert client.state()["progress"]["total"] >= 2
    assert key in {i["id"] for i in client.items("newest", "all")}
    assert fetch(server, f"/api/thumbnails/{key}").startswith(JPEG)
    assert fetch(server, f"/api/images/{key}") == image


def test_while_a_label_write_waits_on_the_bucket_thumbnails_state_items_and_the_next_image_answer(
    s3: Any, pool: ThreadPoolExecutor, tmp_path: Path
) -> None:
    keep_predicted(tmp_path / "device", [("hen", 0.9), ("egg", 0.4), ("fox", 0.6)])
    upload_as_the_device(s3, tmp_path / "device")
    bucket = HeldBucket(s3, f"s3://{BUCKET}/field-data")
    root = bucket.mirror(tmp_path / "mirror")
    options = PageOptions(field_data=root, model_dir=None, cache_dir=tmp_path / "cache", port=0, bucket=bucket)
    with LabelServer(options) as server:
        client = PageClient(server.base_url, server.token, timeout_s=HANG_GUARD_S)
        first, second, third = client.items("newest")
        (one, two, three) = (item["id"].removeprefix("coop-1/") for item in (first, second, third))
        following = FieldDataDir(root / "coop-1").find(two)
        assert following is not None
        try:
            writing = pool.submit(client.label, [first], "hen")
            assert bucket.held.started.wait(HANG_GUARD_S)
            queued = pool.submit(client.label, [third], "fox")  # waits its turn: one write at a time
            assert_the_page_answers(server, client, second["id"], following.image_path.read_bytes())
            assert not writing.done()  # what answered did not wait for the held write
            assert bucket.entered == [one]  # nor did the next write overtake it
        finally:
            bucket.held.release.set()
        (written,) = writing.result(HANG_GUARD_S)
        (queued_written,) = queued.result(HANG_GUARD_S)
        assert (written["label"], queued_written["label"]) == ("hen", "fox")
        assert client.state()["progress"]["labelled"] == 2
    assert label_objects(s3) == {one: "hen", three: "fox"}
    assert bucket.entered == [one, three]


def test_a_flood_of_thumbnails_fills_only_its_own_lane(
    pool: ThreadPoolExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keep_predicted(tmp_path / "field", [("hen", 0.9), ("egg", 0.4)])
    held, lock, busy = Held(), threading.Lock(), [0, 0]  # [now, most at once]
    full = threading.Event()
    make = Thumbnails.get

    def slow_thumbnail(self: Thumbnails, pair: Any) -> bytes:
        with lock:
            busy[0] += 1
            busy[1] = max(busy)
            if busy[0] == PICTURE_THREADS:
                full.set()
        try:
            held.hold()
            return make(self, pair)
        finally:
            with lock:
                busy[0] -= 1

    monkeypatch.setattr(Thumbnails, "get", slow_thumbnail)
    options = PageOptions(field_data=tmp_path / "field", model_dir=None, cache_dir=tmp_path / "cache", port=0)
    with LabelServer(options) as server:
        client = PageClient(server.base_url, server.token, timeout_s=HANG_GUARD_S)
        first, second = client.items("newest")
        try:
            flood = [pool.submit(fetch, server, f"/api/thumbnails/{first['id']}") for _ in range(PICTURE_THREADS + 4)]
            assert full.wait(HANG_GUARD_S)
            assert client.state()["progress"]["total"] == 2
            assert [i["id"] for i in client.items("newest")] == [first["id"], second["id"]]
            (written,) = client.label([second], "egg")
            assert written["label"] == "egg"
            assert busy[1] == PICTURE_THREADS  # the rest of the flood waits for a thread of the lane
        finally:
            held.release.set()
        assert all(answer.result(HANG_GUARD_S).startswith(JPEG) for answer in flood)
    assert busy[1] == PICTURE_THREADS


@pytest.mark.parametrize(
    ("method", "result", "call"),
    [
        ("install", {"name": "m", "version": "1.1.0"}, lambda c: c.install("1.1.0")["installed"]["version"]),
        ("start_retrain", None, lambda c: c.retrain()["retrain"]["state"]),
    ],
    ids=["install", "retrain-start"],
)
def test_an_install_or_a_retrain_start_that_takes_long_leaves_the_page_answering(
    method: str,
    result: Any,
    call: Callable[[PageClient], str],
    pool: ThreadPoolExecutor,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A model package copied into place, or a retrain thread started, on a slow disk."""
    ids = keep_predicted(tmp_path / "field", [("hen", 0.9), ("egg", 0.4)])
    options = PageOptions(
        field_data=tmp_path / "field", model_dir=tmp_path / "model", cache_dir=tmp_path / "cache", port=0
    )
    held = Held()

    def slow(*args: object) -> Any:
        held.hold()
        return result

    with LabelServer(options) as server:
        assert server.desk is not None
        monkeypatch.setattr(server.desk, method, slow)
        client = PageClient(server.base_url, server.token, timeout_s=HANG_GUARD_S)
        image = next((tmp_path / "field").rglob(f"{ids[1]}.jpg")).read_bytes()
        try:
            answer = pool.submit(call, client)
            assert held.started.wait(HANG_GUARD_S)
            assert_the_page_answers(server, client, f"{ids[1]}", image)
            assert client.models()["retrain"]["state"] == "idle"
            assert not answer.done()
        finally:
            held.release.set()
        assert answer.result(HANG_GUARD_S) == ("1.1.0" if method == "install" else "idle")
