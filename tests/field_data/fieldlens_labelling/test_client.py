"""PageClient against the real page on a thread (uvicorn on 127.0.0.1): what the loop demo uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldlens_labelling.client import PageClient, PageError
from fieldlens_labelling.serve import LabelServer, PageOptions
from tests.helpers.labelling import keep_predicted


def test_a_scripted_labeller_pages_through_and_labels(tmp_path: Path) -> None:
    ids = keep_predicted(tmp_path / "field", [("hen", 0.9), ("egg", 0.5), ("fox", 0.6)])
    options = PageOptions(field_data=tmp_path / "field", model_dir=None, cache_dir=tmp_path / "cache", port=0)
    with LabelServer(options) as server:
        assert server.host == "127.0.0.1" and server.url.startswith(f"http://127.0.0.1:{server.port}/?token=")
        client = PageClient(server.base_url, server.token)
        items = list(client.items("uncertain", limit=2))  # two pages, most uncertain first
        assert [i["id"] for i in items] == [ids[1], ids[2], ids[0]]
        assert client.label(items[:1], "egg")[0]["revision"] == 1
        with pytest.raises(PageError, match="409 .*changed since you loaded it"):
            client.label(items[:1], "hen")  # still revision 0
        with pytest.raises(PageError, match="401"):
            PageClient(server.base_url, "wrong").state()
        assert client.state()["progress"]["labelled"] == 1


def test_a_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    from fieldlens_core.errors import InUseError

    options = PageOptions(field_data=tmp_path, model_dir=None, cache_dir=tmp_path / "cache", port=0)
    with LabelServer(options) as first:
        taken = PageOptions(field_data=tmp_path, model_dir=None, cache_dir=tmp_path / "cache", port=first.port)
        with pytest.raises(InUseError, match=f"cannot listen on 127.0.0.1:{first.port}: Address already in use"):
            LabelServer(taken)


def test_label_serve_without_a_field_data_directory_exits_not_found(tmp_path: Path) -> None:
    from fieldlens_cli.main import main

    assert main(["label", "serve", "--field-data", str(tmp_path / "missing"), "--port", "0"]) == 7
