"""`fieldlens field-data ls | stats | sync` against a real store and the stand-in bucket."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from fieldlens_cli.brokers import free_port
from fieldlens_cli.main import main
from tests.helpers.field_data import keep_images


def run(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str]:
    code = main(["field-data", *arguments])
    return code, capsys.readouterr().out


def test_stats_sync_and_ls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kept = keep_images(tmp_path / "field", 4)
    kept[0].sidecar_path.write_text("{broken")
    where = [
        "--field-data",
        str(tmp_path / "field"),
        "--local-bucket-dir",
        str(tmp_path / "bucket"),
        "--thing-name",
        "coop-1",
    ]

    code, out = run(capsys, "stats", *where)
    assert code == 0 and "hen" in out and "4 images kept: 4 queued, 0 uploaded" in out

    code, out = run(capsys, "sync", *where)
    assert code == 0 and "uploaded 3 images" in out and "quarantined 1" in out

    code, out = run(capsys, "ls", *where)
    assert code == 0 and out.count("uploaded") == 3 and "2 files in" in out

    code, out = run(capsys, "ls", "--remote", *where)
    assert code == 0 and "6 objects" in out and f"field-data/coop-1/2026/11/20/{kept[1].image_id}.jpg" in out
    # the CLI must leave SIGPIPE ignored: a write to a closed socket is an error to handle, not a kill
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN


def test_sync_against_an_unreachable_s3_keeps_everything_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")  # fake: nothing real is reached
    keep_images(tmp_path / "field", 2)
    endpoint = f"http://127.0.0.1:{free_port()}"
    code, out = run(
        capsys, "sync", "--field-data", str(tmp_path / "field"), "--bucket", "b-x", "--endpoint-url", endpoint
    )
    assert code == 1 and "uploaded 0 images" in out
    assert len(list((tmp_path / "field").rglob("*.json"))) == 2 and not list((tmp_path / "field").rglob("*.uploaded"))
