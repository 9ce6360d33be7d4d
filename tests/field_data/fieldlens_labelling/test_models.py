"""From the page: label, Retrain (dataset build -> retrain -> gate), read the report, Install. Real training."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldlens_core.model_install import install_package
from fieldlens_core.model_package import current_package
from fieldlens_labelling.client import PageClient
from fieldlens_labelling.serve import LabelServer, PageOptions
from fieldlens_retrain.decisions import read_decisions
from fieldlens_retrain.gate import GateRules
from fieldlens_retrain.pipeline import run_retrain
from tests.helpers.labelling import keep_fashion

pytestmark = pytest.mark.slow
FEW = GateRules(min_val_per_class=1, min_val_images=3)
"""A dozen photos a class: the gate judges on what they hold."""


def test_label_retrain_read_the_report_and_install_from_the_page(tmp_path: Path) -> None:
    truth = keep_fashion(tmp_path / "field", per_class=12)
    options = PageOptions(
        field_data=tmp_path / "field", model_dir=tmp_path / "model", cache_dir=tmp_path / "cache", port=0, rules=FEW
    )
    with LabelServer(options) as server:
        assert server.desk is not None
        client = PageClient(server.base_url, server.token)
        for item in client.items():
            client.label([item], truth[item["id"]])
        assert client.retrain()["retrain"]["state"] == "running"
        status = server.desk.wait(timeout_s=600)
        assert status.state == "done", status.message
        models = client.models()
        assert models["retrain"]["history"][0].startswith("dataset")
        assert [h.split(" ")[0] for h in models["retrain"]["history"]][1:] == [
            "embedding",
            "training",
            "exporting",
            "evaluating",
        ]
        (report,) = models["reports"]
        assert report["published"] and report["installable"]
        assert report["pictures"] == ["confusion-candidate.png", "learning-curve.png"]
        assert set(report["candidate"]["per_class"]) == {"trouser", "bag", "sandal"}
        picture = f"{server.base_url}/api/reports/{report['version']}/confusion-candidate.png"
        import urllib.request

        request = urllib.request.Request(picture, headers={"Authorization": f"Bearer {server.token}"})
        with urllib.request.urlopen(request) as response:
            assert response.read()[:4] == b"\x89PNG"
        assert client.install(report["version"])["installed"]["version"] == report["version"]
        package = current_package(tmp_path / "model")
        assert package is not None and package.card.version == report["version"]
        assert client.models()["current"]["version"] == report["version"]


def test_the_persons_own_class_names_retrain_the_default_model_from_the_page(
    tmp_path: Path, default_model: Path
) -> None:
    """With the ImageNet model current, labels it lacks (and a `b` blank) train a model of exactly those
    classes: no flag. Both models are scored on the same images, in tables bounded by those classes."""
    install_package(default_model, tmp_path / "model")
    truth = keep_fashion(tmp_path / "field", per_class=12)
    own = {"trouser": "launch", "bag": "mug", "sandal": "kitty"}
    options = PageOptions(
        field_data=tmp_path / "field", model_dir=tmp_path / "model", cache_dir=tmp_path / "cache", port=0, rules=FEW
    )
    with LabelServer(options) as server:
        assert server.desk is not None
        client = PageClient(server.base_url, server.token)
        for item in client.items():
            client.label([item], own[truth[item["id"]]])
        client.retrain()
        status = server.desk.wait(timeout_s=600)
        assert status.state == "done", status.message
        (report,) = client.models()["reports"]
        assert report["published"] and report["version"] == "2.0.0"  # a new label set: a major version
        assert set(report["candidate"]["labels"]) == {"launch", "mug", "kitty"}
        assert report["current"]["images"] == report["candidate"]["images"] == report["evaluated_on"]["images"]
        assert report["current"]["columns"][-1] == "(other)" and len(report["current"]["columns"]) == 4
        assert report["memory_peak_mb"] > 0 and report["learning_curve"]["points"]
        assert any("dropped 1000 with no training images" in note for note in report["dataset_notes"])
        assert "Recall by class" in report["sentence"] or "Improved" in report["sentence"]
        [decision] = client.models()["decisions"]
        assert decision["candidate"] == "2.0.0" and decision["verdict"] == "published" and not decision["forced"]

    # the same labels under the default rules: too few validation images to judge, so nothing is published
    strict = run_retrain(
        tmp_path / "models" / "dataset-from-page.json", tmp_path / "models", tmp_path / "model", tmp_path / "cache"
    )
    assert strict.package is None and strict.decision.verdict == "not enough to judge"
    assert strict.version == "2.0.1" and (tmp_path / "models" / "reports" / "2.0.0" / "report.json").exists()
    assert "label about" in strict.decision.reason
    assert [d["verdict"] for d in read_decisions(tmp_path / "models")] == ["not enough to judge", "published"]
