from __future__ import annotations

import json
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from fieldlens_cli.main import main
from fieldlens_core.errors import ExitCode
from fieldlens_fielddata.directory import FieldDataDir
from fieldlens_labelling.serve import LabelServer, PageOptions
from fieldlens_retrain.label_studio import labeling_config, read_export, tasks
from fieldlens_retrain.labels import LabelError, read_labels
from tests.helpers.labelling import export_tasks, import_csv, import_export, keep_predicted


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
    export_tasks(field, out, tmp_path / "none", "--image-url", "http://127.0.0.1:8123/api/images/{id}?token=t0k")
    exported = json.loads(out.read_text())
    assert exported[1]["data"]["image"] == f"http://127.0.0.1:8123/api/images/{ids[1]}?token=t0k"
    config = ET.fromstring(out.with_suffix(".label-config.xml").read_text())
    assert {c.get("value") for c in config.iter("Choice")} == {"hen", "egg"}
    import_csv(field, {ids[0]: "kestrel"})  # a class a person gave is offered too
    export_tasks(field, out, tmp_path / "none", "--image-url", "http://127.0.0.1:8123/api/images/{id}?token=t0k")
    config = ET.fromstring(out.with_suffix(".label-config.xml").read_text())
    assert {c.get("value") for c in config.iter("Choice")} == {"hen", "egg", "kestrel"}
    for task in exported:  # what Label Studio's export adds: the annotations
        task["annotations"] = [annotation("egg", "2026-11-24T10:00")]
    (tmp_path / "export.json").write_text(json.dumps(exported))
    import_export(tmp_path / "export.json", field)
    labelled = [FieldDataDir(field).read(p) for p in FieldDataDir(field).pairs()]
    assert [(s.label, s.label_source) for s in labelled] == [("egg", "import")] * 2


def fetch(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if data is not None else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=10) as answer:
            return int(answer.status), bytes(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def test_exported_image_urls_name_the_running_page_and_can_only_read_images(tmp_path: Path) -> None:
    """They used to carry the page's sign-in token (good for labelling and retraining) and port 8080."""
    field = tmp_path / "field"
    ids = keep_predicted(field, [("hen", 0.9), ("egg", 0.4)])
    out = tmp_path / "tasks.json"
    options = PageOptions(field_data=field, model_dir=None, cache_dir=tmp_path / "cache", port=0)
    with LabelServer(options) as page:
        export_tasks(field, out, tmp_path / "none", "--image-url", page.image_url)
        urls = [task["data"]["image"] for task in json.loads(out.read_text())]
        assert page.token not in out.read_text()
        assert urls == [f"{page.base_url}/api/images/{image_id}?{urlsplit(urls[0]).query}" for image_id in ids]
        status, body = fetch(urls[0])  # what Label Studio's browser does
        assert status == 200 and body == next(field.rglob(f"{ids[0]}.jpg")).read_bytes()
        assert fetch(urls[0].replace("/api/images/", "/api/thumbnails/"))[0] == 200
        query = urlsplit(urls[0]).query
        assert fetch(f"{page.base_url}/api/state?{query}")[0] == 401
        assert fetch(f"{page.base_url}/api/items?{query}")[0] == 401
        write = json.dumps({"items": [{"id": ids[0], "revision": 0}], "label": "egg"}).encode()
        assert fetch(f"{page.base_url}/api/labels?{query}", write)[0] == 401
        assert fetch(f"{page.base_url}/api/retrain?{query}", b"{}")[0] == 401
        assert fetch(f"{page.base_url}/?{query}")[0] == 401  # it signs no browser in
    assert FieldDataDir(field).read(next(FieldDataDir(field).pairs())).label is None


def test_tasks_for_a_directory_need_the_url_the_page_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No guessed address: the page may run on any port, and there is no token to guess."""
    field = tmp_path / "field"
    keep_predicted(field, [("hen", 0.9)])
    arguments = ["label", "export", "--format", "label-studio", "--field-data", str(field)]
    assert main([*arguments, "--out", str(tmp_path / "tasks.json")]) == ExitCode.INVALID_INPUT
    assert "pass the --image-url it prints" in capsys.readouterr().err
    assert not (tmp_path / "tasks.json").exists()
