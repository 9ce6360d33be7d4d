"""TypiClust, near-duplicate stacks and the random tenth (fieldlens_labelling.typical), on made-up embeddings."""

from __future__ import annotations

import numpy as np

from fieldlens_labelling.typical import (
    DUPLICATE_COSINE,
    Embedded,
    interleave,
    kmeans,
    plan,
    typicality,
    typiclust,
)


def blobs(sizes: list[int], seed: int = 0, dims: int = 8) -> tuple[np.ndarray, list[int]]:
    """Blobs far apart, each with its first member exactly at its centre (its most typical point)."""
    rng = np.random.default_rng(seed)
    rows: list[np.ndarray] = []
    centres: list[int] = []
    for n, size in enumerate(sizes):
        centre = np.zeros(dims)
        centre[n] = 10.0  # far apart, yet no member is a near-duplicate of another (cosine ~0.8)
        centres.append(sum(len(r) for r in rows))
        rows.append(np.vstack([centre, centre + rng.normal(0, 2.0, (size - 1, dims))]))
    return np.vstack(rows).astype(np.float32), centres


def test_kmeans_finds_separated_blobs_the_same_way_every_time() -> None:
    x, starts = blobs([30, 20, 10])
    assigned = kmeans(x, 3)
    assert np.array_equal(assigned, kmeans(x, 3))  # a fixed seed: the same clusters on every look
    for start, size in zip(starts, [30, 20, 10], strict=True):
        assert len(set(assigned[start : start + size].tolist())) == 1
    assert len(set(assigned.tolist())) == 3


def test_typicality_is_highest_where_the_points_are_densest() -> None:
    x, _ = blobs([40])
    far = x[0] + 20.0
    scores = typicality(np.vstack([x, far]))
    assert scores.argmax() == 0 and scores.argmin() == len(x)


def test_a_cold_start_takes_the_densest_image_of_each_cluster_largest_first() -> None:
    x, starts = blobs([10, 30, 20])
    picks = typiclust(x, np.zeros(len(x), dtype=bool), clusters=3)
    assert picks == [starts[1], starts[2], starts[0]]


def test_a_cluster_a_label_covers_is_not_picked_again() -> None:
    x, starts = blobs([10, 30, 20])
    labelled = np.zeros(len(x), dtype=bool)
    labelled[starts[1] + 5] = True  # any image of the largest cluster covers it
    assert typiclust(x, labelled, clusters=3) == [starts[2], starts[0]]


def test_every_tenth_place_is_the_shuffles() -> None:
    primary = [f"p{n:02d}" for n in range(30)]
    shuffled = list(reversed(primary))
    order = interleave(primary, shuffled)
    assert sorted(order) == sorted(primary)  # each image once
    assert [order[n] for n in (9, 19, 29)] == ["p29", "p28", "p27"]
    assert [k for n, k in enumerate(order) if n % 10 != 9][:5] == ["p00", "p01", "p02", "p03", "p04"]


def test_near_duplicates_are_one_item_and_the_others_its_stack() -> None:
    x = np.random.default_rng(1).normal(0, 1, (10, 64)).astype(np.float32)  # ten different pictures
    keys = [f"k{n}" for n in range(len(x))]
    copy = x[3] * 1.2 + 0.02  # the same picture, a little brighter
    other = x[3] + 0.45 * x[4]  # near it (about 0.91), but below DUPLICATE_COSINE
    vectors = np.vstack([x, copy, other])
    keys += ["copy", "other"]
    cosine = float(vectors[3] @ other / np.linalg.norm(vectors[3]) / np.linalg.norm(other))
    assert cosine < DUPLICATE_COSINE
    embedded = Embedded(tuple(keys), vectors)
    chosen = plan(keys, keys, [], embedded, None)
    assert "copy" not in chosen.order and chosen.stacks == {"k3": ["copy"]}
    assert "other" in chosen.order
    first_the_copy = ["copy", *[k for k in keys if k != "copy"]]
    assert plan(first_the_copy, first_the_copy, [], embedded, None).stacks == {"copy": ["k3"]}  # the first stands


def test_the_plan_starts_typical_keeps_a_random_tenth_and_is_deterministic() -> None:
    x, starts = blobs([40, 30, 20, 10], dims=16)
    keys = tuple(f"k{n:03d}" for n in range(len(x)))
    shuffled = [keys[n] for n in np.random.default_rng(7).permutation(len(keys))]
    margin = list(reversed(keys))
    first = plan(margin, shuffled, [], Embedded(keys, x), typical_clusters=4)
    again = plan(margin, shuffled, [], Embedded(keys, x), typical_clusters=4)
    assert first == again
    assert first.order[:4] == [keys[s] for s in starts]  # typical first, largest cluster first
    assert not first.stacks  # no two of these are one picture
    assert first.order[9] == next(k for k in shuffled if k not in first.order[:9])  # the shuffle's next
    assert first.order[19] == next(k for k in shuffled if k not in first.order[:19])
    assert first.order[4:9] == [k for k in margin if k not in first.order[:4]][:5]  # then margin
    after = plan(margin, shuffled, [keys[starts[0]], keys[starts[1]]], Embedded(keys, x), typical_clusters=4)
    assert after.order[:2] == [keys[starts[2]], keys[starts[3]]]  # the covered clusters are left


def test_without_embeddings_the_plan_is_the_order_with_its_random_tenth() -> None:
    keys = [f"k{n:02d}" for n in range(12)]
    chosen = plan(keys, list(reversed(keys)), [], None, typical_clusters=5)
    assert chosen.order == [*keys[:9], "k11", "k09", "k10"] and chosen.stacks == {} and chosen.typical == 0
