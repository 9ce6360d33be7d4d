"""The page's embeddings (fieldlens_labelling.embedded) and the default order built on them: a cold
start takes the typical images first, near-duplicates are one item with a stack labelled in one write."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from starlette.testclient import TestClient

from fieldlens_fielddata.directory import FieldDataDir
from fieldlens_labelling.app import Settings, create_app
from fieldlens_labelling.embedded import Embed, PageEmbeddings
from fieldlens_labelling.index import LabelIndex
from fieldlens_labelling.thumbnails import Thumbnails
from tests.helpers.labelling import LABELS, keep_predicted

TOKEN = "s3cret-token"


def sha_of(root: Path, image_id: str) -> str:
    pair = FieldDataDir(root).find(image_id)
    assert pair is not None
    return hashlib.sha256(pair.image_path.read_bytes()).hexdigest()


def fake_backbone(root: Path, vectors: dict[str, np.ndarray], calls: list[int]) -> Embed:
    """Embeddings chosen by the test, by image id, looked up by the image's sha256 as the real cache does."""
    by_sha = {sha_of(root, image_id): vector for image_id, vector in vectors.items()}

    def embed(items: Sequence[tuple[str, Path]]) -> dict[str, np.ndarray]:
        calls.append(len(items))
        return {sha: by_sha[sha] for sha, _ in items}

    return embed


def three_scenes(ids: list[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Images in three clusters (sizes 6, 4, 2), each with a most typical member at its centre;
    the last image a near-copy of the first (cosine ~0.999)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (3, 64)) * 4
    sizes, vectors, typical = [6, 4, 2], {}, []
    n = 0
    for c, size in enumerate(sizes):
        for member in range(size):
            vectors[ids[n]] = centres[c] + (0 if member == 0 else rng.normal(0, 3.0, 64))  # cosine ~0.8
            if member == 0:
                typical.append(ids[n])
            n += 1
    vectors[ids[n]] = vectors[ids[0]] * 1.1 + 0.01  # the same scene, a little brighter
    return {k: v.astype(np.float32) for k, v in vectors.items()}, typical


def page(tmp_path: Path, calls: list[int]) -> tuple[LabelIndex, list[str], list[str], PageEmbeddings]:
    """13 images; TypiClust clusters them into (labels given + 3) clusters."""
    ids = keep_predicted(tmp_path / "field", [("hen", 0.5 + n / 40) for n in range(13)])
    vectors, typical = three_scenes(ids)
    index = LabelIndex.load(tmp_path / "field")
    index.TYPICAL_BATCH = 3
    embeddings = PageEmbeddings(lambda: fake_backbone(tmp_path / "field", vectors, calls))
    index.embeddings = embeddings
    embeddings.start(index.embedding_candidates)
    assert embeddings.wait_idle(30)
    return index, ids, typical, embeddings


def test_nothing_is_embedded_until_an_order_asks(tmp_path: Path) -> None:
    calls: list[int] = []
    ids = keep_predicted(tmp_path / "field", [("hen", 0.5)] * 3)
    vectors = {image_id: np.eye(64, dtype=np.float32)[n] for n, image_id in enumerate(ids)}
    index = LabelIndex.load(tmp_path / "field")
    embeddings = PageEmbeddings(lambda: fake_backbone(tmp_path / "field", vectors, calls))
    index.embeddings = embeddings
    embeddings.start(index.embedding_candidates)
    index.ordered("newest")
    assert calls == [] and embeddings.status()["state"] == "not started"
    index.ordered("useful")  # the first look at the default order starts the thread
    assert embeddings.wait_idle(30) and sum(calls) == 3 and embeddings.status()["embedded"] == 3


def test_a_cold_start_takes_the_typical_image_of_each_cluster_largest_first(tmp_path: Path) -> None:
    index, _, typical, _ = page(tmp_path, [])
    assert index.useful_is() == "typical"
    assert [i.image_id for i in index.ordered("useful")][:3] == typical
    again = LabelIndex.load(tmp_path / "field")
    again.embeddings, again.TYPICAL_BATCH = index.embeddings, 3
    assert [i.key for i in again.ordered("useful")] == [i.key for i in index.ordered("useful")]  # deterministic


def test_a_labelled_cluster_is_covered_and_its_typical_image_is_not_asked_again(tmp_path: Path) -> None:
    index, ids, typical, _ = page(tmp_path, [])
    index.update(FieldDataDir(tmp_path / "field").label(ids[1], "hen", "human"))  # any image of the largest
    assert [i.image_id for i in index.ordered("useful")][:2] == typical[1:]


def test_a_near_duplicate_is_one_item_and_its_stack_is_labelled_in_one_write(tmp_path: Path) -> None:
    index, ids, _, _ = page(tmp_path, [])
    listed, stacks = index.planned("useful")
    assert ids[12] not in [i.image_id for i in listed] and [i.image_id for i in stacks[ids[0]]] == [ids[12]]
    settings = Settings(list(LABELS), "blank", "ana", None, TOKEN, "127.0.0.1", 8080)
    client = TestClient(create_app(index, settings, Thumbnails(tmp_path / "cache")), base_url="http://127.0.0.1:8080")
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    copy = index.get(ids[12])
    assert copy is not None
    answer = client.get("/api/items").json()
    first = next(i for i in answer["items"] if i["id"] == ids[0])
    assert answer["stacked"] == 1 and first["stack"] == [{"id": ids[12], "revision": copy.revision}]
    body = {"items": [{"id": first["id"], "revision": first["revision"]}, *first["stack"]], "label": "hen"}
    written = client.post("/api/labels", content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert written.status_code == 200
    assert {i["id"] for i in written.json()["updated"]} == {ids[0], ids[12]}
    labelled = index.get(ids[12])
    assert labelled is not None and labelled.label == "hen"


def test_without_the_backbone_the_default_order_is_what_it_was(tmp_path: Path) -> None:
    ids = keep_predicted(tmp_path / "field", [("hen", 0.5 + n / 40) for n in range(5)])
    index = LabelIndex.load(tmp_path / "field")

    def missing() -> Embed:
        raise ImportError("no torch")

    index.embeddings = PageEmbeddings(missing)
    index.embeddings.start(index.embedding_candidates)
    assert index.embeddings.wait_idle(30) and index.embeddings.status()["state"] == "unavailable"
    assert index.useful_is() == "random"
    assert [i.image_id for i in index.ordered("useful")] == [i.image_id for i in index.ordered("random")]
    assert sorted(i.image_id for i in index.ordered("useful")) == sorted(ids)


def test_the_labelled_images_are_embedded_first_and_at_most_the_limit(tmp_path: Path) -> None:
    calls: list[int] = []
    ids = keep_predicted(tmp_path / "field", [("hen", 0.5)] * 6)
    vectors = {image_id: np.eye(64, dtype=np.float32)[n] for n, image_id in enumerate(ids)}
    index = LabelIndex.load(tmp_path / "field")
    index.update(FieldDataDir(tmp_path / "field").label(ids[5], "hen", "human"))
    wanted = [key for key, _ in index.embedding_candidates(3)]
    assert len(wanted) == 3 and wanted[0] == ids[5]
    embeddings = PageEmbeddings(lambda: fake_backbone(tmp_path / "field", vectors, calls), limit=3)
    index.embeddings = embeddings
    embeddings.start(index.embedding_candidates)
    assert embeddings.wait_idle(30)
    snapshot = embeddings.snapshot()
    assert snapshot is not None and sorted(snapshot.keys) == sorted(wanted) and sum(calls) == 3
