"""From the page: label, Retrain (dataset build -> retrain -> gate), read the report, Install. Real training."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldlens_core.model_package import current_package
from fieldlens_labelling.client import PageClient
from fieldlens_labelling.serve import LabelServer, PageOptions
from tests.helpers.labelling import keep_fashion

pytestmark = pytest.mark.slow


def test_label_retrain_read_the_report_and_install_from_the_page(tmp_path: Path) -> None:
    truth = keep_fashion(tmp_path / "field", per_class=12)
    options = PageOptions(
        field_data=tmp_path / "field", model_dir=tmp_path / "model", cache_dir=tmp_path / "cache", port=0
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
        assert report["published"] and report["installable"] and report["pictures"] == ["confusion-candidate.png"]
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
