from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from fieldlens_fielddata.bucket_labels import download_field_data
from fieldlens_retrain.dataset import balance_report, build_manifest, read_manifest, write_manifest
from fieldlens_retrain.labels import LabelError, import_labels
from tests.helpers.colour_photos import write_class_folders
from tests.helpers.field_data import keep_images
from tests.helpers.images import solid_jpeg


def test_base_and_field_images_with_sources_splits_and_a_stable_hash(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "base", 10)
    kept = keep_images(tmp_path / "field", 4)
    import_labels(tmp_path / "field", {k.image_id: "red" for k in kept[:3]})
    manifest = build_manifest(tmp_path / "field", {}, tmp_path / "base", None)
    assert manifest.labels == ["blue", "green", "red"]
    assert sum(e.source == "base" for e in manifest.entries) == 30
    assert sum(e.source == "field" for e in manifest.entries) == 3  # the unlabelled one is left out
    assert {e.split for e in manifest.entries} == {"train", "val"}
    write_manifest(manifest, tmp_path / "m.json")
    assert read_manifest(tmp_path / "m.json").sha256 == manifest.sha256 == manifest.digest()


def test_adding_images_never_moves_old_ones_between_splits(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "base", 10)
    before = {e.sha256: e.split for e in build_manifest(None, {}, tmp_path / "base", None).entries}
    write_class_folders(tmp_path / "base", 10, seed=1)
    after = build_manifest(None, {}, tmp_path / "base", None)
    assert len(after.entries) == 60
    assert all(
        after_entry.split == before[after_entry.sha256] for after_entry in after.entries if after_entry.sha256 in before
    )


def test_a_changed_label_changes_the_dataset_hash_and_an_edit_is_detected(tmp_path: Path) -> None:
    kept = keep_images(tmp_path / "field", 2)
    import_labels(tmp_path / "field", {kept[0].image_id: "hen", kept[1].image_id: "hen"})
    first = build_manifest(tmp_path / "field", {}, None, None)
    second = build_manifest(tmp_path / "field", {kept[1].image_id: "duck"}, None, None)
    assert first.sha256 != second.sha256
    write_manifest(first, tmp_path / "m.json")
    document = json.loads((tmp_path / "m.json").read_text())
    document["entries"][0]["label"] = "duck"
    (tmp_path / "m.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match="does not match"):
        read_manifest(tmp_path / "m.json")


def test_pseudo_labels_are_off_by_default_and_marked(tmp_path: Path) -> None:
    keep_images(tmp_path / "field", 3)  # predicted "hen" at 0.8, unlabelled
    with pytest.raises(LabelError, match="no labelled images"):
        build_manifest(tmp_path / "field", {}, None, None)
    manifest = build_manifest(tmp_path / "field", {}, None, None, pseudo_threshold=0.75)
    assert [(e.label, e.source) for e in manifest.entries] == [("hen", "pseudo")] * 3
    with pytest.raises(LabelError):
        build_manifest(tmp_path / "field", {}, None, None, pseudo_threshold=0.9)


def test_field_data_from_s3(aws: None, tmp_path: Path) -> None:
    s3: Any = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(Bucket="fl-data", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    kept = keep_images(tmp_path / "device", 2)
    for item in kept:
        for path in (item.image_path, item.sidecar_path):
            s3.put_object(Bucket="fl-data", Key=f"field-data/coop-1/2026/11/20/{path.name}", Body=path.read_bytes())
    local = download_field_data("s3://fl-data/field-data", tmp_path / "cache", s3)
    manifest = build_manifest(local, {kept[0].image_id: "hen", kept[1].image_id: "egg"}, None, None)
    assert sorted(e.label for e in manifest.entries) == ["egg", "hen"]
    assert all(Path(e.path).is_file() for e in manifest.entries)


def test_an_s3_key_with_dot_dot_cannot_write_outside_the_cache(aws: None, tmp_path: Path) -> None:
    """Any device's token-exchange role can put such a key; `dataset build --from s3://` once wrote it out."""
    s3: Any = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(Bucket="fl-data", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    kept = keep_images(tmp_path / "device", 1)
    s3.put_object(Bucket="fl-data", Key=f"field-data/coop-1/{kept[0].image_path.name}", Body=b"jpeg")
    for key in ("field-data/../../escaped.jpg", "field-data/coop-1/../../../escaped.json", "field-data//x/./y.jpg"):
        s3.put_object(Bucket="fl-data", Key=key, Body=b"evil")
    download_field_data("s3://fl-data/field-data", tmp_path / "cache", s3)
    assert not list(tmp_path.rglob("escaped.*")) and not list((tmp_path / "cache").rglob("y.jpg"))
    assert (tmp_path / "cache/field-data/coop-1" / kept[0].image_path.name).read_bytes() == b"jpeg"


def test_a_devices_sidecar_never_supplies_a_training_label(aws: None, tmp_path: Path) -> None:
    """A label in a sidecar counts only when the labelling step wrote it, and never from S3."""
    import json

    kept = keep_images(tmp_path / "local", 3)
    forged = {"label": "hen"}  # what any device could write: no label_source
    imported = {"label": "egg", "label_source": "import"}  # what `fieldlens label import` writes
    for item, extra in zip(kept, (forged, imported, {}), strict=True):
        item.sidecar_path.write_text(json.dumps({**json.loads(item.sidecar_path.read_text()), **extra}))
    local = build_manifest(tmp_path / "local", {}, None, None)
    assert [e.label for e in local.entries] == ["egg"]

    s3: Any = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(Bucket="fl-data", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    for item in kept:  # where the uploader puts them
        s3.put_object(Bucket="fl-data", Key=item.s3_key, Body=item.image_path.read_bytes())
        s3.put_object(Bucket="fl-data", Key=item.s3_key[:-4] + ".json", Body=item.sidecar_path.read_bytes())
    cache = download_field_data("s3://fl-data/field-data", tmp_path / "cache", s3)
    with pytest.raises(LabelError, match="no labelled images"):
        build_manifest(cache, {}, None, None, True, trust_sidecar_labels=False)
    labelled = build_manifest(cache, {kept[2].image_id: "chick"}, None, None, True, trust_sidecar_labels=False)
    assert [e.label for e in labelled.entries] == ["chick"]


def test_identical_photos_with_different_labels_are_reported_not_dropped_silently(tmp_path: Path) -> None:
    kept = keep_images(tmp_path / "field", 3)
    kept[1].image_path.write_bytes(kept[0].image_path.read_bytes())  # the same photo kept twice
    kept[2].image_path.write_bytes(kept[0].image_path.read_bytes())
    import_labels(tmp_path / "field", {kept[0].image_id: "mug", kept[1].image_id: "cup", kept[2].image_id: "mug"})
    with pytest.raises(LabelError, match="1 photos have conflicting labels"):
        build_manifest(tmp_path / "field", {}, None, None)
    write_class_folders(tmp_path / "base", 5)
    manifest = build_manifest(tmp_path / "field", {}, tmp_path / "base", None)
    [conflict] = manifest.conflicts
    assert conflict.labels == ["cup", "mug"] and len(conflict.keys) == 3
    assert "mug" not in manifest.labels and "cup" not in manifest.labels


def test_copies_with_one_label_are_one_image_in_one_split(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "base", 10)
    for path in sorted((tmp_path / "base" / "red").iterdir()):
        (tmp_path / "base" / "red" / f"copy-{path.name}").write_bytes(path.read_bytes())
    manifest = build_manifest(None, {}, tmp_path / "base", None)
    assert len(manifest.entries) == 30 and not manifest.conflicts
    assert len({e.sha256 for e in manifest.entries}) == 30  # never one copy in train and one in val
    assert manifest.merged_copies == 10
    assert "10 labelled images are byte-for-byte copies of others" in balance_report(manifest)[-1]


def test_the_classes_are_the_labelled_ones_from_a_big_model_and_grow_from_a_small_one(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "base", 10)  # blue, green, red
    imagenet_like = [f"imagenet class {n}" for n in range(997)] + ["red", "green", "blue"]
    from_default = build_manifest(None, {}, tmp_path / "base", imagenet_like)
    assert from_default.labels == ["red", "green", "blue"]  # the parent's order for what it knew
    assert len(from_default.dropped_classes) == 997 and from_default.parent_labels == 1000
    assert set(from_default.balance()) == {"red", "green", "blue"}  # the table lists the classes in play
    own = build_manifest(None, {}, tmp_path / "base", ["green", "red", "blue", "yellow"])
    assert own.labels == ["green", "red", "blue"] and own.dropped_classes == ["yellow"]
    (tmp_path / "base" / "teal").mkdir()
    for n in range(8):
        (tmp_path / "base" / "teal" / f"{n}.jpg").write_bytes(solid_jpeg((0, 120 + 10 * n, 120)))
    grown = build_manifest(None, {}, tmp_path / "base", ["green", "red", "blue"])
    assert grown.labels[:3] == ["green", "red", "blue"] and grown.labels[3:] == ["teal"]


def test_a_label_whose_images_all_went_to_validation_is_named_beside_the_table(tmp_path: Path) -> None:
    """A walk labelled six photos and read a table of five: the sixth's label had no training image."""
    write_class_folders(tmp_path / "base", 10)
    lonely = tmp_path / "base" / "grey"
    lonely.mkdir()
    for shade in range(20, 240):  # a photo the split sends to validation at 20% (by its content)
        body = solid_jpeg((shade, shade, shade))
        if int(hashlib.sha256(body).hexdigest()[:8], 16) % 100 < 20:
            (lonely / "only.jpg").write_bytes(body)
            break
    manifest = build_manifest(None, {}, tmp_path / "base", None, val_percent=20)
    assert manifest.untrained_classes == ["grey"] and "grey" not in manifest.labels
    report = balance_report(manifest)
    assert not any(line.startswith("grey") for line in report)
    assert "left out, not in the table: every labelled image of grey went to validation" in report
