"""Labels for a bucket's field images: their own objects, beside what the devices wrote (moto's S3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from fieldlens_fielddata.bucket_labels import BucketLabels
from fieldlens_fielddata.directory import FieldDataDir, device_directories
from fieldlens_labelling.client import PageClient, PageError
from fieldlens_labelling.serve import LabelServer, PageOptions
from fieldlens_retrain.dataset import build_manifest
from tests.helpers.labelling import export_tasks, keep_predicted

BUCKET = "fl-field"


@pytest.fixture
def s3(aws: None) -> Any:
    client = boto3.client("s3", region_name="eu-west-1")
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return client


def upload_as_the_device(s3: Any, root: Path, forged: dict[str, Any] | None = None) -> dict[str, bytes]:
    """What the uploader puts: image and sidecar at the sidecar's key; returns key -> bytes."""
    objects = {}
    for directory in device_directories(root):
        for pair, sidecar in directory.read_all():
            assert not isinstance(sidecar, Exception)
            body = pair.sidecar_path.read_bytes()
            if forged and pair.image_id in forged:
                body = json.dumps({**json.loads(body), **forged[pair.image_id]}).encode()
            objects[sidecar.s3_key] = pair.image_path.read_bytes()
            objects[sidecar.s3_key[:-4] + ".json"] = body
    for key, body in objects.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return objects


def test_the_mirror_keeps_only_labels_from_label_objects(s3: Any, tmp_path: Path) -> None:
    ids = keep_predicted(tmp_path / "device", [("hen", 0.9), ("egg", 0.4), ("fox", 0.6)])
    upload_as_the_device(s3, tmp_path / "device", forged={ids[0]: {"label": "fox", "label_source": "human"}})
    bucket = BucketLabels(s3, f"s3://{BUCKET}/field-data")
    key = f"labels/field-data/coop-1/2026/11/20/{ids[1]}.json"
    s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps({"image_id": ids[1], "label": "egg", "labeller": "ana"}))
    s3.put_object(Bucket=BUCKET, Key="labels/junk.json", Body=b"{not json")
    root = bucket.mirror(tmp_path / "mirror")
    labels = {p.image_id: s.trusted_label for d in device_directories(root) for p, s in d.read_all()}  # type: ignore[union-attr]
    assert labels == {ids[0]: None, ids[1]: "egg", ids[2]: None}  # the forged label is gone
    manifest = build_manifest(root, {}, None, None)
    assert [e.label for e in manifest.entries] == ["egg"]


def test_the_page_over_a_bucket_writes_label_objects_and_never_the_devices(s3: Any, tmp_path: Path) -> None:
    ids = keep_predicted(tmp_path / "device", [("hen", 0.9), ("egg", 0.4)])
    device_objects = upload_as_the_device(s3, tmp_path / "device")
    bucket = BucketLabels(s3, f"s3://{BUCKET}/field-data")
    root = bucket.mirror(tmp_path / "mirror")
    options = PageOptions(field_data=root, model_dir=None, cache_dir=tmp_path / "cache", port=0, bucket=bucket)
    with LabelServer(options) as server:
        client = PageClient(server.base_url, server.token)
        (item,) = [i for i in client.items() if i["id"] == f"coop-1/{ids[1]}"]  # thing-qualified below a mirror
        client.label([item], "egg")
    record = s3.get_object(Bucket=BUCKET, Key=f"labels/field-data/coop-1/2026/11/20/{ids[1]}.json")["Body"].read()
    assert json.loads(record)["label"] == "egg"
    for key, body in device_objects.items():  # not one byte of what the device wrote changed
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body
    again = BucketLabels(s3, f"s3://{BUCKET}/field-data").mirror(tmp_path / "another-mirror")
    assert [s.trusted_label for d in device_directories(again) for _, s in d.read_all()] == [None, "egg"]  # type: ignore[union-attr]


def test_when_the_bucket_refuses_the_label_nothing_is_labelled(s3: Any, tmp_path: Path) -> None:
    ids = keep_predicted(tmp_path / "device", [("hen", 0.9)])
    upload_as_the_device(s3, tmp_path / "device")
    bucket = BucketLabels(s3, f"s3://{BUCKET}/field-data")
    root = bucket.mirror(tmp_path / "mirror")
    bucket.bucket = "no-such-bucket"  # S3 now refuses every write
    options = PageOptions(field_data=root, model_dir=None, cache_dir=tmp_path / "cache", port=0, bucket=bucket)
    with LabelServer(options) as server:
        client = PageClient(server.base_url, server.token)
        (item,) = list(client.items())
        with pytest.raises(PageError, match="502 .*not written to s3://no-such-bucket.*nothing was labelled"):
            client.label([item], "hen")
        assert client.state()["progress"]["labelled"] == 0
    (pair,) = list(FieldDataDir(root / "coop-1").pairs())
    assert pair.image_id == ids[0] and FieldDataDir(root / "coop-1").read(pair).label is None


def test_label_studio_tasks_from_a_bucket_point_at_its_objects(s3: Any, tmp_path: Path) -> None:
    """`--field-data s3://…` once reached the export as a Path, which folds "s3://" into "s3:/"."""
    ids = keep_predicted(tmp_path / "device", [("hen", 0.9)])
    objects = upload_as_the_device(s3, tmp_path / "device")
    out = tmp_path / "tasks.json"
    export_tasks(f"s3://{BUCKET}/field-data", out, tmp_path / "none", "--cache", str(tmp_path / "cache"))
    (task,) = json.loads(out.read_text())
    image_key = next(key for key in objects if key.endswith(f"{ids[0]}.jpg"))
    assert task["data"] == {**task["data"], "image": f"s3://{BUCKET}/{image_key}", "fieldlens_id": f"coop-1/{ids[0]}"}


def test_a_bulk_write_the_bucket_refuses_half_way_says_which_were_labelled(s3: Any, tmp_path: Path) -> None:
    keep_predicted(tmp_path / "device", [("hen", 0.9), ("egg", 0.8), ("fox", 0.7)])
    upload_as_the_device(s3, tmp_path / "device")

    class RefusesAfterOne(BucketLabels):
        def put(self, sidecar: Any, thing: str | None) -> None:
            if self.s3.list_objects_v2(Bucket=BUCKET, Prefix="labels/").get("KeyCount", 0):
                self.bucket = "no-such-bucket"
            super().put(sidecar, thing)

    bucket = RefusesAfterOne(s3, f"s3://{BUCKET}/field-data")
    root = bucket.mirror(tmp_path / "mirror")
    options = PageOptions(field_data=root, model_dir=None, cache_dir=tmp_path / "cache", port=0, bucket=bucket)
    with LabelServer(options) as server:
        client = PageClient(server.base_url, server.token)
        items = list(client.items("newest"))
        with pytest.raises(PageError, match="502 .*the 1 before it were labelled"):
            client.label(items, "hen")
        assert client.state()["progress"]["labelled"] == 1
