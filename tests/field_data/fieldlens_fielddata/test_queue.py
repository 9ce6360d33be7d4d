from __future__ import annotations

from pathlib import Path

from fieldlens_fielddata.queue import pending, queue_stats, take
from tests.helpers.field_data import START, keep_images


def test_pending_is_oldest_first_across_days_and_skips_receipts(tmp_path: Path) -> None:
    kept = keep_images(tmp_path, 5, start=START.replace(hour=23, minute=57))  # crosses midnight
    kept[1].image_path.with_suffix(".uploaded").write_text("{}")
    assert [p.image_id for p in pending(tmp_path)] == [k.image_id for k in kept if k is not kept[1]]
    assert [p.image_id for p in take(tmp_path, 2)] == [kept[0].image_id, kept[2].image_id]


def test_stats_count_queued_pairs_bytes_and_the_oldest(tmp_path: Path) -> None:
    kept = keep_images(tmp_path, 3)
    stats = queue_stats(tmp_path)
    assert stats.queued == 3 and stats.oldest == START
    assert stats.queued_bytes == sum(k.image_path.stat().st_size + k.sidecar_path.stat().st_size for k in kept)
    assert queue_stats(tmp_path / "nothing-here").queued == 0


def test_foreign_files_and_quarantine_are_not_queued(tmp_path: Path) -> None:
    keep_images(tmp_path, 1)
    (tmp_path / "quarantine").mkdir()
    (tmp_path / "quarantine" / "20261120T080000000Z-aaaa.json").write_text("{}")
    day = next(tmp_path.glob("2026/11/20"))
    (day / "notes.json").write_text("{}")
    assert len(list(pending(tmp_path))) == 1
