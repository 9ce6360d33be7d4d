"""One unreadable sidecar (a directory where `<id>.json` should be) hides nothing else, from any reader.

Every reader of the directory goes through FieldDataDir.read, which turns an unreadable sidecar
into a SidecarError: the tools, the dataset builder, the exports and the labelling page each
skip that pair, say so once, and carry on with the others.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fieldlens_cli.main import main
from fieldlens_fielddata.directory import FieldDataDir
from fieldlens_fielddata.sidecar import Sidecar, SidecarError
from fieldlens_labelling.index import LabelIndex
from fieldlens_retrain.dataset import field_images
from fieldlens_retrain.label_studio import tasks
from fieldlens_retrain.labels import import_labels, labelled
from tests.helpers.field_data import keep_images


@pytest.fixture
def field(tmp_path: Path) -> tuple[Path, str]:
    """25 pairs, the sixth with a directory for a sidecar; returns the root and the broken image id."""
    kept = keep_images(tmp_path / "field", 25)
    import_labels(tmp_path / "field", {k.image_id: "hen" for k in kept})
    broken = kept[5]
    broken.sidecar_path.unlink()
    broken.sidecar_path.mkdir()
    return tmp_path / "field", broken.image_id


def test_the_directory_reports_it_once_and_lists_the_rest(
    field: tuple[Path, str], caplog: pytest.LogCaptureFixture
) -> None:
    root, broken = field
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            read = list(FieldDataDir(root).read_all())
            assert sum(isinstance(s, Sidecar) for _, s in read) == 24
            [(pair, error)] = [(p, s) for p, s in read if isinstance(s, SidecarError)]
            assert pair.image_id == broken and "cannot read sidecar" in str(error)
    assert [r.getMessage() for r in caplog.records].count(
        f"skipping {broken}: {error} (the uploader quarantines it)"
    ) == 1


def test_every_reader_carries_on(field: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    root, broken = field
    assert len(list(field_images(root, {}, None))) == 24
    assert len(labelled(root)) == 24
    assert len(tasks([FieldDataDir(root)], lambda pair, sidecar: pair.image_id)) == 24
    assert len(LabelIndex.load(root).ordered("newest")) == 24  # the page shows 24 of 25, not 0
    assert main(["field-data", "ls", "--field-data", str(root)]) == 0
    listing = capsys.readouterr().out
    assert f"{broken}" in listing and "corrupt" in listing
    assert main(["field-data", "stats", "--field-data", str(root)]) == 0
    assert "25 images kept" in capsys.readouterr().out
