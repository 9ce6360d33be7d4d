"""Two devices in one bucket with the same image id (moto's S3 server): each image keeps its own label.

The attack (issue 21, item 7): a device reuses another's image id; before, the page showed one of
the two, a label given to one went to both, and a coffee photo was trained as "moped". coop-2
also forges its sidecar (``thing`` and ``s3_key`` naming coop-1's image) and uploads a second,
misfiled copy of the id with a label of its own: neither may move a label.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fieldlens_cli.main import main
from fieldlens_fielddata.bucket_labels import BucketLabels
from fieldlens_fielddata.directory import FieldDataDir, s3_key
from fieldlens_fielddata.sidecar import Observation
from fieldlens_fielddata.store import FieldStore
from fieldlens_labelling.client import PageClient
from fieldlens_labelling.serve import LabelServer, PageOptions
from tests.helpers.images import solid_jpeg
from tests.helpers.s3_server import moto_s3

BUCKET = "fl-shared"
URL = f"s3://{BUCKET}/field-data"
WHEN = datetime(2026, 11, 20, 8, 0, 0, tzinfo=UTC)
WHEN_NS = int(WHEN.timestamp()) * 10**9
SHARED = "20261120T080000000Z-1a2b3c4d"
MOPED, COFFEE = solid_jpeg((200, 30, 30)), solid_jpeg((90, 60, 30))
ONE, TWO = f"coop-1/{SHARED}", f"coop-2/{SHARED}"


def upload_as(s3: Any, thing: str, jpeg: bytes, root: Path, forged: dict[str, Any], key: str | None = None) -> None:
    """What ``thing``'s uploader can put: any object under its own prefix, any field in its sidecar."""
    kept = FieldStore(root / thing, thing).keep(SHARED, WHEN, jpeg, Observation(prediction="moped", confidence=0.4))
    key = key or kept.s3_key
    sidecar = {**json.loads(kept.sidecar_path.read_bytes()), **forged}
    s3.put_object(Bucket=BUCKET, Key=key, Body=jpeg)
    s3.put_object(Bucket=BUCKET, Key=key.removesuffix(".jpg") + ".json", Body=json.dumps(sidecar).encode())


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    with moto_s3(monkeypatch, BUCKET) as (endpoint, s3):
        upload_as(s3, "coop-1", MOPED, tmp_path / "devices", {})
        one_key = s3_key("field-data", "coop-1", WHEN, SHARED)
        upload_as(s3, "coop-2", COFFEE, tmp_path / "devices", {"thing": "coop-1", "s3_key": one_key})
        misfiled = f"field-data/coop-2/2020/01/01/{SHARED}.jpg"  # another copy of the id, labelled by the device
        upload_as(s3, "coop-2", COFFEE, tmp_path / "again", {"label": "moped", "label_source": "human"}, misfiled)
        yield endpoint, s3


def fetch(server: LabelServer, path: str) -> bytes:
    request = urllib.request.Request(server.base_url + path, headers={"Authorization": f"Bearer {server.token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body: bytes = response.read()
        return body


def label_objects(s3: Any) -> dict[str, str | None]:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="labels/").get("Contents", [])
    return {o["Key"]: json.loads(s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read())["label"] for o in listed}


def label_on_the_page(s3: Any, cache: Path, labels: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Label images by key on the page over the bucket's mirror; returns its items by id afterwards."""
    bucket = BucketLabels(s3, URL)
    options = PageOptions(
        field_data=bucket.mirror(cache / "s3"), model_dir=None, cache_dir=cache, port=0, bucket=bucket
    )
    with LabelServer(options) as server:
        client = PageClient(server.base_url, server.token)
        for key, label in labels.items():
            (item,) = [i for i in client.items("newest", "all") if i["id"] == key]
            client.label([item], label)
        return {i["id"]: i for i in client.items("newest", "all")}


def test_the_page_shows_both_images_and_labels_only_the_one_labelled(bucket: tuple[str, Any], tmp_path: Path) -> None:
    _, s3 = bucket
    labels = BucketLabels(s3, URL)
    root = labels.mirror(tmp_path / "cache" / "s3")
    images = [pair.image_path for thing in ("coop-1", "coop-2") for pair in FieldDataDir(root / thing).pairs()]
    assert len({path.stat().st_size for path in images}) == 1
    for path in images:  # the same size and time too: nothing else tells their thumbnails apart
        os.utime(path, ns=(WHEN_NS, WHEN_NS))
    options = PageOptions(field_data=root, model_dir=None, cache_dir=tmp_path / "cache", port=0, bucket=labels)
    with LabelServer(options) as server:
        client = PageClient(server.base_url, server.token)
        items = {i["id"]: i for i in client.items("newest")}
        assert set(items) == {ONE, TWO}
        assert items[TWO]["thing"] == "coop-2"  # where it was uploaded, not the thing its sidecar claims
        for key, photo in ((ONE, MOPED), (TWO, COFFEE)):
            assert fetch(server, f"/api/images/{key}") == photo
            assert fetch(server, f"/api/images/{urllib.parse.quote(key, safe='')}") == photo  # as app.js asks
        assert fetch(server, f"/api/thumbnails/{ONE}") != fetch(server, f"/api/thumbnails/{TWO}")
        client.label([items[TWO]], "coffee")
        after = {i["id"]: i["label"] for i in client.items("newest", "all")}
        assert after == {ONE: None, TWO: "coffee"}
        assert client.state()["progress"]["labelled"] == 1
    (one,), (two,) = (list(FieldDataDir(root / thing).pairs()) for thing in ("coop-1", "coop-2"))
    assert FieldDataDir(root / "coop-1").read(one).label is None
    assert FieldDataDir(root / "coop-2").read(two).label == "coffee"
    # its own label object, at the key of coop-2's image: not at the one its sidecar claims
    assert label_objects(s3) == {f"labels/{s3_key('field-data', 'coop-2', WHEN, SHARED, '.json')}": "coffee"}


def test_label_import_refuses_a_bare_id_that_names_both_and_takes_one_by_thing_or_key(
    bucket: tuple[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, s3 = bucket
    root = BucketLabels(s3, URL).mirror(tmp_path / "mirror")
    csv = tmp_path / "labels.csv"
    csv.write_text(f"key,label\n{SHARED},moped\n")
    assert main(["label", "import", str(csv), "--field-data", str(root)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert ONE in line and TWO in line and "<thing>/<image id>" in line
    labelled = {
        t: [FieldDataDir(root / t).read(p).label for p in FieldDataDir(root / t).pairs()] for t in ("coop-1", "coop-2")
    }
    assert labelled == {"coop-1": [None], "coop-2": [None]}  # nothing written
    one_key = s3_key("field-data", "coop-1", WHEN, SHARED)
    csv.write_text(f"key,label\n{one_key},moped\n{TWO},coffee\n")
    assert main(["label", "import", str(csv), "--field-data", str(root)]) == 0
    labelled = {
        t: [FieldDataDir(root / t).read(p).label for p in FieldDataDir(root / t).pairs()] for t in ("coop-1", "coop-2")
    }
    assert labelled == {"coop-1": ["moped"], "coop-2": ["coffee"]}


def test_dataset_build_from_the_bucket_gives_each_image_its_own_label(
    bucket: tuple[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint, s3 = bucket
    label_on_the_page(s3, tmp_path / "page", {ONE: "moped", TWO: "coffee"})
    out = tmp_path / "dataset.json"
    build = ["dataset", "build", "--from", URL, "--out", str(out), "--val-percent", "0", "--model", str(tmp_path)]
    build += ["--cache", str(tmp_path / "cache"), "--endpoint-url", endpoint, "--region", "eu-west-1"]
    assert main(build) == 0
    manifest = json.loads(out.read_text())
    assert manifest["conflicts"] == []  # the misfiled copy with the device's own label is not read at all
    given = {(Path(e["path"]).read_bytes(), e["label"]) for e in manifest["entries"]}
    assert given == {(MOPED, "moped"), (COFFEE, "coffee")}
    capsys.readouterr()
    csv = tmp_path / "labels.csv"
    csv.write_text(f"key,label\n{SHARED},moped\n")  # a labels file's bare id names both images: refused
    assert main([*build, "--labels", str(csv)]) == 2
    assert ONE in capsys.readouterr().err
