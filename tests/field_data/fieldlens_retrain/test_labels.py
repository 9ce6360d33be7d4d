from __future__ import annotations

import json
from pathlib import Path

import pytest

from fieldlens_fielddata.directory import new_image_id
from fieldlens_fielddata.sidecar import Observation
from fieldlens_fielddata.store import FieldStore
from fieldlens_retrain.labels import (
    LabelError,
    export_labels,
    image_id_of,
    image_key_of,
    import_labels,
    labelled,
    read_labels,
)
from tests.helpers.field_data import START, keep_images
from tests.helpers.images import solid_jpeg


def test_keys_of_every_kind_name_the_image_id() -> None:
    for key in ("2026/11/20/abc.jpg", "field-data/t/2026/11/20/abc.json", "abc", "C:\\x\\abc.jpg"):
        assert image_id_of(key) == "abc"


def test_csv_and_coco_are_read(tmp_path: Path) -> None:
    (tmp_path / "l.csv").write_text("key,label\n2026/11/20/a.jpg,hen\nb,duck\n")
    assert read_labels(tmp_path / "l.csv") == {"a": "hen", "b": "duck"}
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg"}],
        "categories": [{"id": 7, "name": "hen"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 7}],
    }
    (tmp_path / "l.json").write_text(json.dumps(coco))
    assert read_labels(tmp_path / "l.json") == {"a": "hen"}


def test_a_csv_without_its_header_is_refused_not_read_as_empty(tmp_path: Path) -> None:
    (tmp_path / "l.csv").write_text("abc123,mug\n")  # one row, no header: DictReader would take it as the header
    with pytest.raises(LabelError, match="header key,label"):
        read_labels(tmp_path / "l.csv")
    (tmp_path / "l.csv").write_text("key,label\n")
    with pytest.raises(LabelError, match="no labels"):
        read_labels(tmp_path / "l.csv")


@pytest.mark.parametrize("text", ["file,class\na,b\n", "key,label\na,\n"])
def test_bad_csv_files_are_refused_with_the_line(tmp_path: Path, text: str) -> None:
    (tmp_path / "l.csv").write_text(text)
    with pytest.raises(LabelError):
        read_labels(tmp_path / "l.csv")


def test_import_writes_sidecars_and_export_round_trips(tmp_path: Path) -> None:
    kept = keep_images(tmp_path / "field", 3)
    written = import_labels(
        tmp_path / "field", {kept[0].image_id: "hen", kept[2].image_id: "egg", "no-such-image": "hen"}
    )
    assert written.labelled == 2 and written.unmatched == ["no-such-image"]
    assert json.loads(kept[0].sidecar_path.read_text())["label"] == "hen"
    assert labelled(tmp_path / "field") == {kept[0].image_id: "hen", kept[2].image_id: "egg"}
    for form, name in (("csv", "out.csv"), ("coco", "out.json")):
        export_labels(labelled(tmp_path / "field"), tmp_path / name, form)
        assert read_labels(tmp_path / name) == {kept[0].image_id: "hen", kept[2].image_id: "egg"}


def test_any_class_name_is_welcome_but_not_one_that_cannot_be_a_class(tmp_path: Path) -> None:
    kept = keep_images(tmp_path / "field", 2)
    assert import_labels(tmp_path / "field", {kept[0].image_id: " goose "}).labelled == 1
    assert json.loads(kept[0].sidecar_path.read_text())["label"] == "goose"
    for bad in ("nul\x00byte", "x" * 201, "   ", "right\u202eleft"):
        with pytest.raises(LabelError, match="label"):
            import_labels(tmp_path / "field", {kept[1].image_id: bad})
    assert "label" not in json.loads(kept[1].sidecar_path.read_text())  # nothing written


def test_a_key_names_its_thing_where_it_says_one() -> None:
    for key, named in {
        "abc": "abc",
        "2026/11/20/abc.jpg": "abc",  # a device's own directory
        "C:\\x\\abc.jpg": "abc",
        "coop-1/abc": "coop-1/abc",
        "field-data/coop-1/2026/11/20/abc.json": "coop-1/abc",  # an S3 key
        "/cache/s3/field-data/coop-1/2026/11/20/abc.jpg": "coop-1/abc",  # a mirror's path
    }.items():
        assert image_key_of(key) == named, key


def test_labels_of_two_devices_sharing_an_id_round_trip_by_thing(tmp_path: Path) -> None:
    image_id = new_image_id(START)
    for n, thing in enumerate(("coop-1", "coop-2")):
        FieldStore(tmp_path / "mirror" / thing, thing).keep(image_id, START, solid_jpeg((n, 0, 0)), Observation())
    with pytest.raises(LabelError, match=f"coop-1/{image_id}, coop-2/{image_id}"):
        import_labels(tmp_path / "mirror", {image_id: "hen"})
    assert labelled(tmp_path / "mirror") == {}
    given = {f"coop-1/{image_id}": "hen", f"coop-2/{image_id}": "egg"}
    assert import_labels(tmp_path / "mirror", given).labelled == 2
    assert labelled(tmp_path / "mirror") == given
    for form, name in (("csv", "out.csv"), ("coco", "out.json")):
        export_labels(given, tmp_path / name, form)
        assert read_labels(tmp_path / name) == given
