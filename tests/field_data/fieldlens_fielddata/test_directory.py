from __future__ import annotations

import json
from pathlib import Path

import pytest

from fieldlens_fielddata.directory import FieldDataDir, PairState, date_path, device_directories, new_image_id
from fieldlens_fielddata.sidecar import Observation, SidecarError, StaleSidecarError
from fieldlens_fielddata.store import FieldStore
from tests.helpers.field_data import START, keep_images
from tests.helpers.images import solid_jpeg


def test_pending_is_oldest_first_across_days_and_skips_receipts(tmp_path: Path) -> None:
    kept = keep_images(tmp_path, 5, start=START.replace(hour=23, minute=57))  # crosses midnight
    kept[1].image_path.with_suffix(".uploaded").write_text("{}")
    directory = FieldDataDir(tmp_path)
    assert [p.image_id for p in directory.pending()] == [k.image_id for k in kept if k is not kept[1]]
    assert [p.image_id for p in directory.take(2)] == [kept[0].image_id, kept[2].image_id]
    assert [p.state for p in directory.pairs()] == [PairState.QUEUED, PairState.UPLOADED] + [PairState.QUEUED] * 3


def test_stats_count_queued_pairs_bytes_and_the_oldest(tmp_path: Path) -> None:
    kept = keep_images(tmp_path, 3)
    stats = FieldDataDir(tmp_path).queue_stats()
    assert stats.queued == 3 and stats.oldest == START
    assert stats.queued_bytes == sum(k.image_path.stat().st_size + k.sidecar_path.stat().st_size for k in kept)
    assert FieldDataDir(tmp_path / "nothing-here").queue_stats().queued == 0


def test_foreign_files_and_quarantine_are_not_listed(tmp_path: Path) -> None:
    keep_images(tmp_path, 1)
    (tmp_path / "quarantine").mkdir()
    (tmp_path / "quarantine" / "20261120T080000000Z-aaaa.json").write_text("{}")
    day = next(tmp_path.glob("2026/11/20"))
    (day / "notes.json").write_text("{}")
    directory = FieldDataDir(tmp_path)
    assert len(list(directory.pending())) == 1
    assert [p.name for p in directory.quarantined()] == ["20261120T080000000Z-aaaa.json"]


def test_find_refuses_names_that_are_not_image_ids(tmp_path: Path) -> None:
    (kept,) = keep_images(tmp_path, 1)
    directory = FieldDataDir(tmp_path)
    found = directory.find(kept.image_id)
    assert found is not None and found.image_path == kept.image_path
    for hostile in ("../../etc/passwd", f"{kept.image_id}/../x", "/etc/passwd", kept.image_id + "\x00", ""):
        assert directory.find(hostile) is None
    assert directory.find("20261120T080000000Z-ffffffff") is None  # well formed, not here


def test_read_all_reports_unreadable_sidecars_instead_of_skipping_them(tmp_path: Path) -> None:
    good, bad, other = keep_images(tmp_path, 3)
    bad.sidecar_path.write_text("{not json")
    other.sidecar_path.write_text(json.dumps({**json.loads(good.sidecar_path.read_text()), "image_id": "x"}))
    read = dict((pair.image_id, sidecar) for pair, sidecar in FieldDataDir(tmp_path).read_all())
    assert read[good.image_id].image_id == good.image_id  # type: ignore[union-attr]
    assert isinstance(read[bad.image_id], SidecarError)
    assert "names another image" in str(read[other.image_id])


def test_a_label_keeps_what_the_device_wrote_and_bumps_the_revision(tmp_path: Path) -> None:
    (kept,) = keep_images(tmp_path, 1)
    before = json.loads(kept.sidecar_path.read_text())
    labelled = FieldDataDir(tmp_path).label(kept.image_id, "hen", "human", labeller="ana", expected_revision=0)
    after = json.loads(kept.sidecar_path.read_text())
    assert labelled.revision == 1 and after["label"] == "hen" and after["labeller"] == "ana"
    assert after["label_source"] == "human" and after["labelled_at"].endswith("Z")
    assert {k: v for k, v in after.items() if k in before and k != "revision"} == {
        k: v for k, v in before.items() if k != "revision"
    }


def test_a_label_against_an_old_revision_is_refused_not_lost(tmp_path: Path) -> None:
    """Two tabs: both loaded revision 0; the second write must not silently replace the first."""
    (kept,) = keep_images(tmp_path, 1)
    directory = FieldDataDir(tmp_path)
    directory.label(kept.image_id, "hen", "human", expected_revision=0)
    with pytest.raises(StaleSidecarError, match="its label is now 'hen'"):
        directory.label(kept.image_id, "fox", "human", expected_revision=0)
    assert json.loads(kept.sidecar_path.read_text())["label"] == "hen"


def test_clearing_a_label_removes_its_provenance(tmp_path: Path) -> None:
    (kept,) = keep_images(tmp_path, 1)
    directory = FieldDataDir(tmp_path)
    directory.label(kept.image_id, "hen", "import")
    cleared = directory.label(kept.image_id, None, "human")
    assert cleared.label is None and cleared.trusted_label is None
    assert not {"label", "label_source", "labelled_at"} & set(json.loads(kept.sidecar_path.read_text()))


def test_labelling_an_image_that_is_not_here_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no field image"):
        FieldDataDir(tmp_path).label("20261120T080000000Z-ffffffff", "hen", "human")


def test_an_excluded_image_has_no_trusted_label_and_says_who_excluded_it(tmp_path: Path) -> None:
    (kept,) = keep_images(tmp_path, 1)
    directory = FieldDataDir(tmp_path)
    directory.label(kept.image_id, "hen", "human")
    excluded = directory.label(kept.image_id, "hen", "human", labeller="ana", excluded=True)
    assert excluded.excluded and excluded.label is None and excluded.trusted_label is None
    assert excluded.labeller == "ana"
    relabelled = directory.label(kept.image_id, "hen", "human")
    assert not relabelled.excluded and relabelled.trusted_label == "hen"


def test_an_image_is_its_id_in_a_device_directory_and_thing_slash_id_in_a_mirror(tmp_path: Path) -> None:
    image_id = new_image_id(START)
    for root, thing in ((tmp_path / "device", "coop-1"), (tmp_path / "mirror" / "coop-1", "coop-1")):
        FieldStore(root, thing).keep(image_id, START, solid_jpeg((1, 2, 3)), Observation())
    FieldStore(tmp_path / "mirror" / "coop-2", "coop-1").keep(image_id, START, solid_jpeg((1, 2, 3)), Observation())
    assert [p.key for d in device_directories(tmp_path / "device") for p in d.pairs()] == [image_id]
    keys = [p.key for d in device_directories(tmp_path / "mirror") for p in d.pairs()]
    assert keys == [f"coop-1/{image_id}", f"coop-2/{image_id}"]  # the directory's thing, not the sidecar's


def test_a_copy_filed_under_another_date_is_not_listed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A device can upload one; find() and label() never reach it, so no reader may trust its label."""
    (kept,) = keep_images(tmp_path, 1)
    elsewhere = tmp_path / date_path(START.replace(year=2020)) / kept.image_path.name
    elsewhere.parent.mkdir(parents=True)
    for path in (kept.image_path, kept.sidecar_path):
        path.rename(elsewhere.with_suffix(path.suffix))
    assert list(FieldDataDir(tmp_path).pairs()) == [] and list(FieldDataDir(tmp_path).read_all()) == []
    assert "not under its date" in caplog.text
