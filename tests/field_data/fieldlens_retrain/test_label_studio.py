from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from fieldlens_fielddata.directory import FieldDataDir
from fieldlens_retrain.label_studio import labeling_config, read_export, tasks
from fieldlens_retrain.labels import LabelError, read_labels
from tests.helpers.labelling import export_tasks, import_export, keep_predicted


def annotation(label: str, updated: str, cancelled: bool = False) -> dict[str, Any]:
    result = [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]
    return {"result": result, "was_cancelled": cancelled, "updated_at": updated}


def test_tasks_carry_the_image_url_the_id_and_the_models_suggestion(tmp_path: Path) -> None:
    ids = keep_predicted(tmp_path, [("hen", 0.9), ("egg", 0.4)])
    found = tasks([FieldDataDir(tmp_path)], lambda pair, sidecar: f"s3://b/{sidecar.s3_key}")
    assert [t["data"]["fieldlens_id"] for t in found] == ids
    first = found[0]
    assert first["data"]["image"] == f"s3://b/field-data/coop-1/2026/11/20/{ids[0]}.jpg"
    (prediction,) = first["predictions"]
    assert prediction["model_version"] == "m 1.0.0" and prediction["score"] == 0.9
    assert prediction["result"][0]["value"] == {"choices": ["hen"]}


def test_the_labelling_interface_names_every_label_safely() -> None:
    view = ET.fromstring(labeling_config(["hen", 'say "cheese"', "a<b&c"]))
    assert [c.get("value") for c in view.iter("Choice")] == ["hen", 'say "cheese"', "a<b&c"]
    assert view.find("Image").get("value") == "$image"  # type: ignore[union-attr]


def test_the_latest_annotation_that_was_not_cancelled_wins() -> None:
    export = [
        {
            "id": 1,
            "data": {"fieldlens_id": "a"},
            "annotations": [annotation("hen", "2026-11-24T10:00"), annotation("egg", "2026-11-24T11:00")],
        },
        {
            "id": 2,
            "data": {"fieldlens_id": "b"},
            "annotations": [annotation("fox", "2026-11-24T10:00"), annotation("hen", "2026-11-24T12:00", True)],
        },
        {"id": 3, "data": {"fieldlens_id": "c"}, "annotations": []},
    ]
    assert read_export(export) == {"a": "egg", "b": "fox"}


@pytest.mark.parametrize("export", [[{"id": 1, "data": {"image": "x.jpg"}}], [{"id": 1}], ["task"]])
def test_an_export_fieldlens_did_not_write_is_a_clear_error(tmp_path: Path, export: list[Any]) -> None:
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    with pytest.raises(LabelError, match="not a Label Studio export"):
        read_labels(path)


def test_export_then_import_through_the_command_line(tmp_path: Path) -> None:
    field = tmp_path / "field"
    ids = keep_predicted(field, [("hen", 0.9), ("egg", 0.4)])
    out = tmp_path / "tasks.json"
    export_tasks(field, out, tmp_path / "none", "--token", "t0k")
    exported = json.loads(out.read_text())
    assert exported[1]["data"]["image"] == f"http://127.0.0.1:8080/api/images/{ids[1]}?token=t0k"
    config = ET.fromstring(out.with_suffix(".label-config.xml").read_text())
    assert {c.get("value") for c in config.iter("Choice")} == {"hen", "egg"}
    for task in exported:  # what Label Studio's export adds: the annotations
        task["annotations"] = [annotation("egg", "2026-11-24T10:00")]
    (tmp_path / "export.json").write_text(json.dumps(exported))
    import_export(tmp_path / "export.json", field, tmp_path / "none")
    labelled = [FieldDataDir(field).read(p) for p in FieldDataDir(field).pairs()]
    assert [(s.label, s.label_source) for s in labelled] == [("egg", "import")] * 2
