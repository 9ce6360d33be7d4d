"""Which labelling orders could meet issue 11's goal, measured on embeddings instead of retrains.

    .venv/bin/python -m tests.measurements.label_orders [--cache DIR]

The label-order bench (``fieldlens bench --only label-order``) retrains a real package after
every step and takes about ten minutes for five orders. This script asks the question before an
order is built into the page: the same images as the bench and the loop demo (300 studio photos
as the base, a pool of 600 field photos, 300 other field photos to score on; Debian's
dataset-fashion-mnist, embedded once by the retrain's own EmbeddingCache), the same 80/20 split
by sha256, and the retrain's own head (fieldlens_retrain.train: linear + class prototypes,
blended in the share the retrain would choose), trained on the embeddings after each step. Orders:

- random: four shuffles;
- class-balanced: the classes in turn by the true labels, three shuffles (an oracle);
- coverage K: k-means clusters of the pool's embeddings (scipy), the image nearest each
  centre first, clusters in turn, largest first, the clusters with fewest labels first;
- page prototypes: what a page could do with embeddings and the labels given so far: each
  unlabelled image's class guessed from the nearest labelled class mean, then the guessed
  classes in turn, the class with fewest labels first, with images far from every labelled
  class in a queue of their own while a class is still unseen; the first 25 by coverage 10.

Like the bench, the order is asked again at each step (25, 50, 100, 150, 200 labels).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy.cluster.vq import kmeans2

from fieldlens_retrain.dataset import split_of
from fieldlens_retrain.embeddings import EmbeddingCache
from fieldlens_retrain.train import DEFAULT_SETTINGS, head_module, linear_share_for, prototypes, train_head
from fieldlens_samples import fashion
from fieldlens_samples.scenario import write_scenario
from tests.measurements.few_labels import embed

STEPS = (25, 50, 100, 150, 200)
Order = Callable[[list[int]], list[int]]  # labelled so far -> the rest, in order


def embedded(cache: EmbeddingCache, paths: list[Path]) -> tuple[np.ndarray, list[str]]:
    return embed(cache, paths), [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


class Pool:
    """The embeddings, labels and train split of the base, pool and held-out images."""

    def __init__(self, cache: EmbeddingCache) -> None:
        rng = np.random.default_rng(3)  # the label-order bench's draw
        with tempfile.TemporaryDirectory() as scratch:
            scenario = write_scenario(Path(scratch), rng, base=30, camera=60, holdout=30)  # the camera's: the pool
            pool_truth, held_truth = scenario.camera_truth, scenario.holdout_truth
            base_paths = sorted(scenario.base.glob("*/*.jpg"))
            pool_paths = [scenario.camera / name for name in sorted(pool_truth)]
            self.base, base_shas = embedded(cache, base_paths)
            self.pool, pool_shas = embedded(cache, pool_paths)
            self.held = embed(cache, [scenario.holdout / name for name in sorted(held_truth)])
        self.base_y = np.array([fashion.LABELS.index(p.parent.name) for p in base_paths])
        self.pool_y = np.array([fashion.LABELS.index(pool_truth[n]) for n in sorted(pool_truth)])
        self.held_y = np.array([fashion.LABELS.index(held_truth[n]) for n in sorted(held_truth)])
        self.base_train = np.array([split_of(sha, 20) == "train" for sha in base_shas])
        self.pool_train = np.array([split_of(sha, 20) == "train" for sha in pool_shas])
        plain = self.pool[:, 0]
        self.unit = plain / np.linalg.norm(plain, axis=1, keepdims=True)

    def accuracy(self, labelled: list[int]) -> float:
        """The retrain's head on the base images and the labelled pool images (training split only)."""
        chosen = [i for i in labelled if self.pool_train[i]]
        features = np.concatenate([self.base[self.base_train], self.pool[chosen]])
        targets = np.concatenate([self.base_y[self.base_train], self.pool_y[chosen]])
        flat, repeated = features.reshape(-1, features.shape[-1]), np.repeat(targets, features.shape[1])
        weight, bias = train_head(flat, repeated, 10, DEFAULT_SETTINGS)
        share, _ = linear_share_for(features, targets, 10, DEFAULT_SETTINGS)  # as the retrain chooses it
        centres = prototypes(flat, repeated, 10)
        module = head_module(weight, bias, centres, DEFAULT_SETTINGS.prototype_scale, share)
        with torch.no_grad():
            guesses = module(torch.from_numpy(self.held[:, 0])).argmax(1).numpy()
        return float((guesses == self.held_y).mean())


def in_turn(queues: list[list[int]]) -> list[int]:
    queues = [q for q in queues if q]
    return [q[n] for n in range(max(map(len, queues), default=0)) for q in queues if n < len(q)]


def curve(pool: Pool, order: Order) -> list[float]:
    labelled: list[int] = []
    accuracies = []
    for step in STEPS:
        labelled += order(labelled)[: step - len(labelled)]
        accuracies.append(pool.accuracy(labelled))
    return accuracies


def shuffled(seed: int) -> Order:
    fixed = np.random.default_rng(seed).permutation(600).tolist()
    return lambda labelled: [i for i in fixed if i not in set(labelled)]


def balanced(pool: Pool, seed: int) -> Order:
    fixed = np.random.default_rng(seed).permutation(600)
    queue = in_turn([[int(i) for i in fixed if pool.pool_y[i] == c] for c in range(10)])
    return lambda labelled: [i for i in queue if i not in set(labelled)]


def coverage(pool: Pool, k: int) -> Order:
    centres, cluster = kmeans2(pool.unit, k, seed=0, minit="++")
    distance = np.linalg.norm(pool.unit - centres[cluster], axis=1)
    size = np.bincount(cluster, minlength=k)

    def order(labelled: list[int]) -> list[int]:
        taken = set(labelled)
        count = np.bincount(cluster[labelled], minlength=k) if labelled else np.zeros(k, int)
        by_cluster = sorted(range(k), key=lambda c: (count[c], -size[c]))
        return in_turn([[i for i in np.argsort(distance) if cluster[i] == c and i not in taken] for c in by_cluster])

    return order


def page_prototypes(pool: Pool) -> Order:
    start = coverage(pool, 10)

    def order(labelled: list[int]) -> list[int]:
        if not labelled:
            return start(labelled)
        taken = set(labelled)
        rest = [i for i in range(600) if i not in taken]
        given = pool.pool_y[labelled]  # what the person answered: the page knows these
        classes = sorted(set(given.tolist()))
        centres = np.stack(
            [pool.unit[[i for i, g in zip(labelled, given, strict=True) if g == c]].mean(0) for c in classes]
        )
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        similarity = pool.unit[rest] @ centres.T
        guess, nearest = similarity.argmax(1), similarity.max(1)
        rng = np.random.default_rng(len(labelled))
        fewest_first = sorted(range(len(classes)), key=lambda k: int((given == classes[k]).sum()))
        queues = [[rest[j] for j in rng.permutation(np.flatnonzero(guess == k))] for k in fewest_first]
        if len(classes) < 10:  # a class nobody has labelled yet is likeliest far from every labelled one
            queues.insert(0, [rest[j] for j in np.argsort(nearest)])
        return in_turn(queues)

    return order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache", type=Path, default=Path("fieldlens-data/few-labels-cache"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    pool = Pool(EmbeddingCache(args.cache))
    rows: dict[str, list[list[float]]] = {
        "random (4 shuffles)": [curve(pool, shuffled(seed)) for seed in (1, 2, 3, 4)],
        "class-balanced, knows the truth (3 shuffles)": [curve(pool, balanced(pool, seed)) for seed in (1, 2, 3)],
        "coverage 10": [curve(pool, coverage(pool, 10))],
        "coverage 50": [curve(pool, coverage(pool, 50))],
        "coverage 100": [curve(pool, coverage(pool, 100))],
        "page prototypes": [curve(pool, page_prototypes(pool))],
    }
    print("| order | " + " | ".join(f"{step} labels" for step in STEPS) + " |")
    print("| --- |" + " --- |" * len(STEPS))
    for name, runs in rows.items():
        means = [statistics.mean(values) for values in zip(*runs, strict=True)]
        print(f"| {name} | " + " | ".join(f"{m:.1%}" for m in means) + " |", flush=True)
    target = statistics.mean(run[-1] for run in rows["random (4 shuffles)"])
    print(f"\nrandom order at 200 labels: {target:.1%}; at 100 labels each order has:")
    for name, runs in rows.items():
        print(f"- {name}: {statistics.mean(run[2] for run in runs):.1%}")
    for k in (10, 50, 100):  # how far the clusters are the classes
        _, cluster = kmeans2(pool.unit, k, seed=0, minit="++")
        common = sum(np.bincount(pool.pool_y[cluster == c], minlength=10).max() for c in set(cluster.tolist()))
        print(f"{k} clusters: {common / len(cluster):.1%} of the pool share their cluster's most common class")


if __name__ == "__main__":
    main()
