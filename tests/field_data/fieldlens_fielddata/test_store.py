from __future__ import annotations

import contextlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fieldlens_core import atomic
from fieldlens_fielddata import directory as field_directory
from fieldlens_fielddata.directory import new_image_id, s3_key
from fieldlens_fielddata.sidecar import Observation
from fieldlens_fielddata.store import FULL_RECHECK_S, FieldStore, StoreFullError

WHEN = datetime(2026, 3, 4, 5, 6, 7, 890_000, tzinfo=UTC)


def test_image_and_sidecar_land_in_the_dated_layout(tmp_path: Path) -> None:
    store = FieldStore(tmp_path / "fd", thing="coop-1", s3_prefix="field-data")
    kept = store.keep("img-1", WHEN, b"\xff\xd8jpeg", Observation(prediction="hen"))
    assert kept.image_path == (tmp_path / "fd/2026/03/04/img-1.jpg").absolute()
    assert kept.image_path.read_bytes() == b"\xff\xd8jpeg"
    sidecar = json.loads(kept.sidecar_path.read_text())
    assert sidecar == {
        "schema_version": 2,
        "prediction": "hen",
        "confidence": 0.0,
        "predictions": [],
        "capture": {},
        "reason": "",
        "image_id": "img-1",
        "s3_key": kept.s3_key,
        "thing": "coop-1",
        "score": 0.0,
        "saved": False,
        "revision": 0,
        "excluded": False,
    }
    assert kept.s3_key == "field-data/coop-1/2026/03/04/img-1.jpg"


def test_no_temporary_files_are_left_behind(tmp_path: Path) -> None:
    FieldStore(tmp_path, "t").keep("a", WHEN, b"x", Observation())
    names = sorted(p.name for p in (tmp_path / "2026/03/04").iterdir())
    assert names == ["a.jpg", "a.json"]


def test_a_failed_sidecar_write_leaves_no_orphan_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = atomic.atomic_write

    def disk_full_on_sidecar(path: Path, data: bytes, **kwargs: bool) -> None:  # same signature as atomic_write
        if path.suffix == ".json":
            raise OSError(28, "No space left on device")
        real_write(path, data, **kwargs)

    monkeypatch.setattr(field_directory, "atomic_write", disk_full_on_sidecar)
    with pytest.raises(OSError, match="No space left"):
        FieldStore(tmp_path, "t").keep("a", WHEN, b"x", Observation())
    assert list((tmp_path / "2026/03/04").iterdir()) == []


def test_image_ids_sort_by_time_and_are_unique() -> None:
    later = WHEN.replace(second=8)
    assert new_image_id(WHEN) < new_image_id(later)
    assert new_image_id(WHEN).startswith("20260304T050607890Z-")
    assert len({new_image_id(WHEN) for _ in range(100)}) == 100


def test_s3_keys_drop_empty_prefixes() -> None:
    assert s3_key("", "t", WHEN, "i") == "t/2026/03/04/i.jpg"
    assert s3_key("/a/b/", "t", WHEN, "i") == "a/b/t/2026/03/04/i.jpg"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_a_read_only_store_raises(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(OSError):
            FieldStore(tmp_path / "x", "t").keep("a", WHEN, b"x", Observation())
    finally:
        tmp_path.chmod(0o700)


def test_group_commit_fsyncs_later_and_on_close(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    store = FieldStore(tmp_path, "t", sync_interval_s=3600)  # never on its own during the test
    kept = store.keep("a", WHEN, b"x", Observation())
    gone = store.keep("b", WHEN, b"y", Observation())
    assert synced == []  # nothing in the request path
    gone.image_path.unlink()  # removed before the flush: skipped, not an error
    store.close()
    assert str(kept.image_path) in synced and str(kept.sidecar_path) in synced
    assert str(kept.image_path.parent) in synced and str(gone.image_path) not in synced


def test_inline_durability_fsyncs_before_returning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    FieldStore(tmp_path, "t", sync_interval_s=0).keep("a", WHEN, b"x", Observation())
    assert len(calls) == 3  # image, sidecar, directory


def ids(count: int, start: datetime = WHEN) -> list[tuple[str, datetime]]:
    """Real, time-ordered image ids a second apart."""
    from datetime import timedelta

    return [(new_image_id(start + timedelta(seconds=i)), start + timedelta(seconds=i)) for i in range(count)]


def mark_uploaded(store: FieldStore, image_id: str, when: datetime) -> None:
    store.directory.pair_for(image_id, when).image_path.with_suffix(".uploaded").write_text("{}")


def test_the_image_cap_is_never_exceeded_under_a_flood(tmp_path: Path) -> None:
    store = FieldStore(tmp_path, "t", max_images=20)
    for image_id, when in ids(100):
        with contextlib.suppress(StoreFullError):
            store.keep(image_id, when, b"x" * 100, Observation(), score=0.5)
        assert store.image_count <= 20
        assert len(list(tmp_path.rglob("*.json"))) <= 20


def test_uploaded_images_go_first_and_sampled_images_never_evict_each_other(tmp_path: Path) -> None:
    store = FieldStore(tmp_path, "t", max_images=4)
    (a, ta), (b, tb), (c, tc), (d, td), (e, te), (f, tf) = ids(6)
    store.keep(a, ta, b"x", Observation(), score=0.9)
    store.keep(b, tb, b"x", Observation(), score=0.1)
    store.keep(c, tc, b"x", Observation(), score=0.5)
    store.keep(d, td, b"x", Observation(), score=0.7)
    mark_uploaded(store, c, tc)
    store.keep(e, te, b"x", Observation(), score=0.3)  # full: the uploaded one goes
    assert not store.directory.pair_for(c, tc).image_path.exists() and store.image_count == 4
    with pytest.raises(StoreFullError, match="no image that is not uploaded yet may make way"):
        store.keep(f, tf, b"x", Observation(), score=0.99)  # full, nothing uploaded: even a more useful one waits
    assert all(store.directory.pair_for(i, t).sidecar_path.exists() for i, t in [(a, ta), (b, tb), (d, td), (e, te)])


def test_a_saved_image_evicts_the_least_useful_sampled_one_but_never_another_saved_one(tmp_path: Path) -> None:
    """`save: true` from any requester once evicted every not-yet-uploaded sampled image."""
    store = FieldStore(tmp_path, "t", max_images=3)
    (a, ta), (b, tb), (c, tc), (d, td), (e, te) = ids(5)
    store.keep(a, ta, b"x", Observation(), score=0.9)
    store.keep(b, tb, b"x", Observation(), score=0.1)  # the least useful
    store.keep(c, tc, b"x", Observation(), score=1.2, saved=True)
    store.keep(d, td, b"x", Observation(), score=1.5, saved=True)  # a saved newcomer: the least useful sampled (b) goes
    assert (
        not store.directory.pair_for(b, tb).sidecar_path.exists()
        and store.directory.pair_for(a, ta).sidecar_path.exists()
    )
    store.keep(e, te, b"x", Observation(), score=1.9, saved=True)  # then a (the last sampled one)
    with pytest.raises(StoreFullError):
        store.keep(*ids(6)[5], b"x", Observation(), score=1.99, saved=True)  # never c, d or e: saved by someone
    assert [store.directory.pair_for(i, t).sidecar_path.exists() for i, t in [(c, tc), (d, td), (e, te)]] == [True] * 3


def test_the_saved_kind_survives_a_restart(tmp_path: Path) -> None:
    first = FieldStore(tmp_path, "t", max_images=2)
    (a, ta), (b, tb), (c, tc) = ids(3)
    first.keep(a, ta, b"x", Observation(), score=1.5, saved=True)
    first.keep(b, tb, b"x", Observation(), score=0.5)
    first.close()
    again = FieldStore(tmp_path, "t", max_images=2)
    assert again.kept_times(saved=True) == [ta] and again.kept_times() == [tb]
    again.keep(c, tc, b"x", Observation(), score=1.9, saved=True)  # a is saved, so the sampled b makes way
    assert (
        again.directory.pair_for(a, ta).sidecar_path.exists()
        and not again.directory.pair_for(b, tb).sidecar_path.exists()
    )


def test_the_byte_cap_counts_image_and_sidecar(tmp_path: Path) -> None:
    store = FieldStore(tmp_path, "t", max_bytes=3000)
    refused = 0
    for image_id, when in ids(10):
        try:
            store.keep(image_id, when, b"x" * 900, Observation(), score=float(when.second))
        except StoreFullError:
            refused += 1  # nothing is uploaded, so nothing may make way
        assert sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()) <= 3000
    assert store.image_count == 10 - refused >= 2
    with pytest.raises(StoreFullError, match="larger than the whole cap"):
        store.keep(*ids(1)[0], b"x" * 4000, Observation(), score=99)


def test_the_index_survives_a_restart_and_a_crash_leaves_nothing_half_done(tmp_path: Path) -> None:
    store = FieldStore(tmp_path, "t", max_images=3)
    (a, ta), (b, tb), (c, tc) = ids(3)
    store.keep(a, ta, b"x", Observation(), score=0.4)
    store.keep(b, tb, b"x", Observation(), score=0.6)
    orphan = store.directory.pair_for(c, tc).image_path  # what a kill -9 between the two renames leaves
    orphan.write_bytes(b"half")
    leftover = orphan.with_name(f".{c}.json.123.456.tmp")
    leftover.write_bytes(b"{")
    restarted = FieldStore(tmp_path, "t", max_images=3)
    assert restarted.image_count == 2 and restarted.byte_count == store.byte_count
    assert not orphan.exists() and not leftover.exists()
    assert restarted.kept_times() == [ta, tb]


def test_a_full_store_is_looked_through_again_only_every_few_seconds(tmp_path: Path) -> None:
    """Looking stats every kept pair: a camera at 30 frames a second must not pay that per frame."""
    now = [0.0]
    store = FieldStore(tmp_path, "t", max_images=2, clock=lambda: now[0])
    (a, ta), (b, tb), (c, tc), (d, td) = ids(4)
    store.keep(a, ta, b"x", Observation())
    store.keep(b, tb, b"x", Observation())
    with pytest.raises(StoreFullError):
        store.keep(c, tc, b"x", Observation())
    mark_uploaded(store, a, ta)
    now[0] = FULL_RECHECK_S / 2
    with pytest.raises(StoreFullError, match="looked again at most every"):
        store.keep(c, tc, b"x", Observation())  # within the interval: not looked for
    assert store.directory.pair_for(a, ta).sidecar_path.exists()
    now[0] = FULL_RECHECK_S
    store.keep(d, td, b"x", Observation())  # looked again: the uploaded one makes way
    assert not store.directory.pair_for(a, ta).sidecar_path.exists() and store.image_count == 2


def test_a_reservation_holds_room_and_names_before_anything_is_written(tmp_path: Path) -> None:
    """What lets a response name its image (and S3 key) before the image is written."""
    store = FieldStore(tmp_path, "coop-1", max_images=2)
    (a, ta), (b, tb), (c, tc) = ids(3)
    reserved = store.reserve(a, ta, b"x", Observation(), score=0.5)
    assert reserved.kept.s3_key == s3_key("field-data", "coop-1", ta, a)
    assert not reserved.kept.image_path.exists() and store.image_count == 1  # counted, not written
    store.keep(b, tb, b"x", Observation(), score=0.5)
    mark_uploaded(store, b, tb)
    store.keep(c, tc, b"x", Observation(), score=0.5)  # full: the uploaded b makes way, never the reserved a
    assert store.write(reserved) == reserved.kept
    assert reserved.kept.image_path.read_bytes() == b"x" and store.image_count == 2


def test_a_reserved_pair_is_not_forgotten_when_the_store_looks_for_room(tmp_path: Path) -> None:
    """The store forgets pairs whose sidecar is gone (uploaded and deleted); a reserved pair has none yet."""
    store = FieldStore(tmp_path, "t", max_images=1)
    (a, ta), (b, tb) = ids(2)
    reserved = store.reserve(a, ta, b"x", Observation())
    with pytest.raises(StoreFullError):
        store.keep(b, tb, b"x", Observation())  # looks through the index, finds a not yet written
    store.write(reserved)
    assert store.image_count == 1 and store.kept_times() == [ta]


def test_a_failed_write_gives_the_room_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FieldStore(tmp_path, "t", max_images=1)
    (a, ta), (b, tb) = ids(2)
    reserved = store.reserve(a, ta, b"x", Observation())

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.directory, "write_new", disk_full)
    with pytest.raises(OSError, match="No space left"):
        store.write(reserved)
    assert store.image_count == 0 and store.byte_count == 0
    monkeypatch.undo()
    store.keep(b, tb, b"x", Observation())  # the cap has room again
    assert store.image_count == 1
