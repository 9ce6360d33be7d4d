from __future__ import annotations

import json
from pathlib import Path

import pytest

from fieldlens_retrain.labels import LabelError, export_labels, image_id_of, import_labels, labelled, read_labels
from tests.helpers.field_data import keep_images


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
        tmp_path / "field", {kept[0].image_id: "hen", kept[2].image_id: "egg", "no-such-image": "hen"}, None, False
    )
    assert written.labelled == 2 and written.unmatched == ["no-such-image"]
    assert json.loads(kept[0].sidecar_path.read_text())["label"] == "hen"
    assert labelled(tmp_path / "field") == {kept[0].image_id: "hen", kept[2].image_id: "egg"}
    for form, name in (("csv", "out.csv"), ("coco", "out.json")):
        export_labels(labelled(tmp_path / "field"), tmp_path / name, form)
        assert read_labels(tmp_path / name) == {kept[0].image_id: "hen", kept[2].image_id: "egg"}


def test_labels_the_model_does_not_know_need_new_labels(tmp_path: Path) -> None:
    kept = keep_images(tmp_path / "field", 1)
    with pytest.raises(LabelError, match="--new-labels"):
        import_labels(tmp_path / "field", {kept[0].image_id: "goose"}, ["hen", "egg"], allow_new=False)
    assert import_labels(tmp_path / "field", {kept[0].image_id: "goose"}, ["hen", "egg"], allow_new=True).labelled == 1
