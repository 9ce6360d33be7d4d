"""Tasks out to the real Label Studio, annotated there through its API, its export back into the sidecars."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fieldlens_fielddata.directory import FieldDataDir
from tests.helpers.label_studio import LabelStudio
from tests.helpers.labelling import export_tasks, import_export, keep_predicted

pytestmark = pytest.mark.slow


def test_a_round_trip_through_label_studio(tmp_path: Path) -> None:
    field = tmp_path / "field"
    ids = keep_predicted(field, [("hen", 0.9), ("egg", 0.4), ("fox", 0.6)])
    tasks = tmp_path / "tasks.json"
    none = str(tmp_path / "no-model")
    export_tasks(field, tasks, Path(none), "--image-url", "http://127.0.0.1:8123/api/images/{id}?token=images-only")

    (tmp_path / "ls").mkdir()
    studio = LabelStudio(tmp_path / "ls")
    try:
        config = tasks.with_suffix(".label-config.xml").read_text()
        project = studio.api("POST", "/api/projects", {"title": "fieldlens field images", "label_config": config})
        imported = studio.api("POST", f"/api/projects/{project['id']}/import", json.loads(tasks.read_text()))
        assert imported["task_count"] == 3 and imported["prediction_count"] == 3
        listed = studio.api("GET", f"/api/tasks?project={project['id']}&fields=all")["tasks"]
        by_id = {task["data"]["fieldlens_id"]: task for task in listed}
        assert set(by_id) == set(ids)
        truth = {ids[0]: "hen", ids[1]: "fox", ids[2]: "fox"}  # a person corrects the model on the second
        for image_id, label in truth.items():
            result = [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]
            studio.api("POST", f"/api/tasks/{by_id[image_id]['id']}/annotations", {"result": result})
        export = studio.api("GET", f"/api/projects/{project['id']}/export?exportType=JSON")
    finally:
        studio.stop()

    (tmp_path / "export.json").write_text(json.dumps(export))
    import_export(tmp_path / "export.json", field)
    directory = FieldDataDir(field)
    labelled = {pair.image_id: directory.read(pair) for pair in directory.pairs()}
    assert {image_id: sidecar.label for image_id, sidecar in labelled.items()} == truth
    assert all(sidecar.label_source == "import" and sidecar.prediction for sidecar in labelled.values())
