from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fieldlens_fielddata.directory import FieldDataDir, Pair
from fieldlens_fielddata.sidecar import Sidecar
from fieldlens_labelling import index as index_module
from fieldlens_labelling.index import LabelIndex
from tests.helpers.labelling import LABELS, import_csv, keep_predicted


def test_progress_follows_every_write(tmp_path: Path) -> None:
    ids = keep_predicted(tmp_path, [("hen", 0.9), ("egg", 0.5), ("fox", 0.6), ("hen", 0.7)])
    index, directory = LabelIndex.load(tmp_path), FieldDataDir(tmp_path)
    index.update(directory.label(ids[0], "hen", "human"))
    index.update(directory.label(ids[1], "hen", "human"))
    index.update(directory.label(ids[1], "egg", "human"))  # relabelled: counted once, as egg
    index.update(directory.label(ids[2], None, "human", excluded=True))
    progress = index.progress(["hen", "egg", "fox"], target_per_class=30)
    assert (progress["total"], progress["labelled"], progress["excluded"]) == (4, 2, 1)
    assert progress["per_class"] == {"egg": 1, "fox": 0, "hen": 1} and progress["weakest"] == "fox"
    assert index.label_names(suggested=False) == {"hen", "egg"}
    assert index.label_names(suggested=True) == {"hen", "egg", "fox"}
    reloaded = LabelIndex.load(tmp_path).progress(["hen", "egg", "fox"], target_per_class=30)
    assert {k: v for k, v in reloaded.items() if k != "indexing"} == {
        k: v for k, v in progress.items() if k != "indexing"
    }


def test_the_first_chunk_is_served_while_the_rest_is_indexed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keep_predicted(tmp_path, [("hen", 0.5 + i / 100) for i in range(7)])
    monkeypatch.setattr(LabelIndex, "CHUNK", 3)
    index = LabelIndex()
    thread = index.start_loading(tmp_path)
    assert len(index) >= 3  # start_loading returned with at least the first chunk
    thread.join(timeout=10)
    assert index.loaded.is_set() and len(index) == 7 and index.progress([], 30)["indexing"] is False


def test_an_unreadable_directory_is_reported_not_fatal(tmp_path: Path) -> None:
    index = LabelIndex()
    index.start_loading(tmp_path / "missing").join(timeout=10)
    assert index.loaded.is_set() and len(index) == 0


def test_uncertain_takes_the_predicted_classes_in_turn(tmp_path: Path) -> None:
    """Pure uncertainty would give the three unsure hens before the one unsure egg."""
    ids = keep_predicted(tmp_path, [("hen", 0.40), ("hen", 0.42), ("hen", 0.45), ("egg", 0.60), ("fox", 0.9)])
    index = LabelIndex.load(tmp_path)
    assert [i.image_id for i in index.ordered("least_confidence")] == ids
    assert [i.image_id for i in index.ordered("uncertain")] == [ids[0], ids[3], ids[4], ids[1], ids[2]]
    index.update(FieldDataDir(tmp_path).label(ids[0], "hen", "human"))
    assert [i.image_id for i in index.ordered("uncertain")] == [ids[1], ids[3], ids[4], ids[2], ids[0]]


def test_useful_is_a_representative_sample_until_people_agree_with_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(LabelIndex, "TRUST_AFTER", 4)
    monkeypatch.setattr(LabelIndex, "TRUST_AGREEMENT", 0.8)
    ids = keep_predicted(tmp_path, [("hen", 0.3 + i / 40) for i in range(12)])
    index, directory = LabelIndex.load(tmp_path), FieldDataDir(tmp_path)

    def useful() -> list[str]:
        return [i.image_id for i in index.ordered("useful")]

    assert useful() == [i.image_id for i in index.ordered("random")] != ids
    for image_id, label in zip(ids[:3], ("hen", "hen", "hen"), strict=True):
        index.update(directory.label(image_id, label, "human"))
    assert index.useful_is() == "random"  # 3 of 3 agree, but 3 labels judge nothing yet
    index.update(directory.label(ids[3], "egg", "human"))
    assert index.useful_is() == "random"  # 3 of 4 agree: below TRUST_AGREEMENT
    index.update(directory.label(ids[4], "hen", "human"))
    assert index.useful_is() == "margin"  # 4 of 5
    assert useful()[:7] == [i.image_id for i in index.ordered("margin")][:7] == ids[5:]  # what is done: last
    index.update(directory.label(ids[4], "fox", "human"))  # relabelled: 3 of 5 again
    assert index.useful_is() == "random"
    useful_state = index.progress(["hen", "egg", "fox"], 30)["useful"]
    assert useful_state == {
        "is": "random",
        "judged": 5,
        "agreed": 3,
        "trust_after": 4,
        "trust_agreement": 0.8,
        "typical_until": LabelIndex.TYPICAL_UNTIL,
        "embeddings": {"state": "off"},  # no embeddings: no typical phase
    }


def test_random_is_a_fixed_shuffle(tmp_path: Path) -> None:
    ids = keep_predicted(tmp_path, [("hen", 0.5)] * 12)
    first = [i.image_id for i in LabelIndex.load(tmp_path).ordered("random")]
    assert first == [i.image_id for i in LabelIndex.load(tmp_path).ordered("random")]
    assert sorted(first) == sorted(ids) and first != ids and first != ids[::-1]


def test_uncertain_puts_continuous_modes_event_boundaries_first(tmp_path: Path) -> None:
    ids = keep_predicted(tmp_path, [("hen", 0.40), ("egg", 0.45), ("fox", 0.80), ("hen", 0.90)])
    directory = FieldDataDir(tmp_path)
    for image_id in (ids[2], ids[3]):  # the two sure ones were where an event started and ended
        path = next(tmp_path.rglob(f"{image_id}.json"))
        document = json.loads(path.read_text())
        path.write_text(json.dumps({**document, "event_id": "e1", "event_role": "boundary"}))
    index = LabelIndex.load(tmp_path)
    assert [i.image_id for i in index.ordered("uncertain")] == [ids[2], ids[3], ids[0], ids[1]]
    assert index.get(ids[2]) is not None and index.get(ids[2]).to_json()["boundary"] is True  # type: ignore[union-attr]
    index.update(directory.label(ids[2], "fox", "human"))
    assert [i.image_id for i in index.ordered("uncertain")] == [ids[3], ids[0], ids[1], ids[2]]


def test_a_refresh_counts_what_label_import_wrote_meanwhile(tmp_path: Path) -> None:
    field = tmp_path / "field"
    ids = keep_predicted(field, [("hen", 0.9), ("egg", 0.5), ("fox", 0.6), ("hen", 0.7)])
    index = LabelIndex.load(field)
    index.update(FieldDataDir(field).label(ids[0], "egg", "human"))  # the page's own write, then an import
    import_csv(field, {ids[0]: "hen", ids[1]: "egg", ids[2]: "chick"})
    assert index.progress(LABELS, 30)["per_class"] == {"egg": 1, "fox": 0, "hen": 0}  # not looked yet
    index.refresh()
    progress = index.progress(LABELS, 30)
    assert progress["labelled"] == 3 and progress["per_class"] == {"chick": 1, "egg": 1, "fox": 0, "hen": 1}
    assert index.get(ids[0]).revision == 2  # type: ignore[union-attr]
    assert [i.image_id for i in index.ordered("newest") if not i.done] == [ids[3]]


def test_a_refresh_takes_in_new_and_removed_images(tmp_path: Path) -> None:
    field = tmp_path / "field"
    ids = keep_predicted(field, [("hen", 0.9), ("egg", 0.5)])
    index = LabelIndex.load(field)
    index.update(FieldDataDir(field).label(ids[0], "hen", "human"))
    directory = FieldDataDir(field)
    directory.remove(directory.find(ids[0]))  # type: ignore[arg-type]  # shipped and removed by the uploader
    kept = keep_predicted(field, [("fox", 0.6)], thing="coop-2")  # a device kept one more (a day later)
    index.refresh()
    assert sorted(i.image_id for i in index.ordered("newest")) == sorted([ids[1], *kept])
    assert index.progress(LABELS, 30)["labelled"] == 0


def test_a_change_in_the_same_clock_tick_as_the_last_look_is_not_missed(tmp_path: Path) -> None:
    """A second write within the file system's mtime granularity leaves the day's mtime as it was."""
    field = tmp_path / "field"
    ids = keep_predicted(field, [("hen", 0.9), ("egg", 0.5)])
    index = LabelIndex.load(field)
    day = next(field.rglob(f"{ids[1]}.json")).parent
    looked = os.stat(day)
    import_csv(field, {ids[1]: "egg"})
    os.utime(day, ns=(looked.st_atime_ns, looked.st_mtime_ns))  # as if the write fell in the same tick
    index.refresh()
    assert index.progress(LABELS, 30)["per_class"] == {"egg": 1, "fox": 0, "hen": 0}


def test_a_look_at_an_unchanged_directory_reads_no_sidecar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "RACY_NS", 0)  # stamps trusted at once: what every stamp is 2 s later
    field = tmp_path / "field"
    ids = keep_predicted(field, [("hen", 0.9), ("egg", 0.5), ("fox", 0.6)])
    index = LabelIndex.load(field)
    read: list[str] = []
    original = FieldDataDir.read

    def counting(directory: FieldDataDir, pair: Pair) -> Sidecar:
        read.append(pair.image_id)
        return original(directory, pair)

    monkeypatch.setattr(FieldDataDir, "read", counting)
    index.refresh()
    assert read == []
    import_csv(field, {ids[2]: "fox"})
    read.clear()  # the import reads the sidecar it labels, through the same class
    index.refresh()
    assert read == [ids[2]] and index.progress(LABELS, 30)["per_class"] == {"egg": 0, "fox": 1, "hen": 0}


def test_a_write_whose_update_comes_after_a_later_write_was_read_leaves_the_later_one(tmp_path: Path) -> None:
    """The page's write and its update run on a worker thread; between them a refresh on another
    thread can read what `label import` wrote next. That later label stands, counted once."""
    (image_id,) = keep_predicted(tmp_path, [("hen", 0.9)])
    index, directory = LabelIndex.load(tmp_path), FieldDataDir(tmp_path)
    before = index.get(image_id)
    ours = directory.label(image_id, "hen", "human")
    theirs = directory.label(image_id, "egg", "import")
    assert index.update(theirs).label == "egg"  # what the refresh took in first
    kept = index.update(ours)
    assert (kept.label, kept.revision) == ("egg", theirs.revision)
    assert index.progress(["hen", "egg"], 30)["per_class"] == {"egg": 1, "hen": 0}
    assert before is not None and before.label is None  # an item once handed out never changes
