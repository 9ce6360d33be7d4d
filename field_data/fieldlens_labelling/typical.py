"""Which images to label first while labels are few: TypiClust, near-duplicate stacks, a random tenth.

The low-budget active-learning literature measured that with few labels the images that teach
the most are the *typical* ones, spread over the data, not the uncertain ones (Hacohen, Dekel and
Weinshall, "Active Learning on a Budget: Opposite Strategies Suit High and Low Budgets", ICML
2022: TypiClust). Its recipe, here on the retrain's own backbone embeddings:

- cluster the embeddings into as many clusters as there will be labels (k-means, fixed seed);
- typicality of an image = 1 / its mean distance to its k (20) nearest neighbours in its cluster;
- take the most typical image of the largest cluster that no labelled image covers yet, then the
  next largest, and so on.

Two things the page adds around it:

- **near-duplicates** (embeddings whose cosine similarity is at least DUPLICATE_COSINE: a device
  in continuous mode keeps many frames of one unchanged scene) are one item: the first in the
  order stands for them, and the others travel with it as its *stack*, which the page labels in
  one go; no label is spent twice on the same picture;
- **a tenth of the order is random** (every tenth place, a fixed shuffle), so that the labels given
  always contain a uniform sample of the field images, and an accuracy measured on it is not
  biased by what the order chose.

Everything here is a pure function of its inputs (numpy only: the page's extra has no scipy or
scikit-learn), deterministic for a given set of embeddings, so the page shows the same order on
every look until labels or embeddings change.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

log = logging.getLogger(__name__)

DUPLICATE_COSINE = 0.93
"""Cosine similarity (L2-normalised plain-view embeddings) at or above which two images are one
picture. Measured (field_data/README.md, "The default order"): frames of one field photo as
continuous mode keeps them (JPEG quality 40-75, light +-6%, a shift of 1-3%) are 0.95 from each
other at the median; two different photos at most 0.77 there, and at most 0.83 over the 179,700
pairs of the label-order bench's 600 field photos. At 0.93, 400 such frames of 100 photos are
listed as 126 items, none joined with another photo; at 0.97, as 288; at 0.90, as 106."""
NEIGHBOURS = 20
"""k of the typicality's k nearest neighbours, as in the paper."""
RANDOM_EVERY = 10
"""Every tenth place of the order is the next image of a fixed shuffle."""
PROJECTED_DIMS = 64
"""k-means and typicality run on the embeddings projected on their first principal components:
the same clusters to within a few images, at a twentieth of the cost (1280 dimensions -> 64)."""
MIN_CLUSTER = 2
"""A cluster smaller than this is an outlier, not a mode of the data: never a typical pick."""
SEED = 0


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (float32); a zero row stays zero."""
    x = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit: np.ndarray = x / np.maximum(norms, 1e-12)
    return unit


def project(x: np.ndarray, dims: int = PROJECTED_DIMS) -> np.ndarray:
    """The rows centred and projected on their first ``dims`` principal components (float32)."""
    centred = x - x.mean(axis=0, keepdims=True)
    if x.shape[1] <= dims or x.shape[0] <= dims:
        small: np.ndarray = centred.astype(np.float32)
        return small
    _, vectors = np.linalg.eigh(centred.T.astype(np.float64) @ centred)  # ascending: the last are the first
    basis = vectors[:, ::-1][:, :dims].T
    signs = np.sign(basis[np.arange(dims), np.abs(basis).argmax(axis=1)])  # a fixed sign: deterministic
    projected: np.ndarray = (centred @ (basis * signs[:, None]).T).astype(np.float32)
    return projected


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] - 2.0 * (a @ b.T) + (b * b).sum(1)[None, :]
    clipped: np.ndarray = np.maximum(d, 0.0)
    return clipped


def kmeans(x: np.ndarray, k: int, seed: int = SEED, iterations: int = 100, restarts: int = 3) -> np.ndarray:
    """Cluster of each row: Lloyd's iterations from greedy k-means++ seeds (as scikit-learn
    seeds), the best of ``restarts`` by inertia; deterministic for a given seed."""
    n = len(x)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    best, best_inertia = np.zeros(n, dtype=np.int64), np.inf
    for _ in range(restarts):
        assigned, inertia = _lloyd(x, _seeds(x, k, rng), iterations)
        if inertia < best_inertia:
            best, best_inertia = assigned, inertia
    return best


def _seeds(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++: of 2 + log(k) candidates drawn by squared distance, the one that lowers the potential most."""
    n, trials = len(x), 2 + int(np.log(k))
    centres = np.empty((k, x.shape[1]), dtype=np.float32)
    centres[0] = x[rng.integers(n)]
    nearest = _squared_distances(x, centres[:1])[:, 0]
    for c in range(1, k):
        total = float(nearest.sum())
        if total <= 0:
            centres[c] = x[rng.integers(n)]
            continue
        candidates = rng.choice(n, size=trials, p=nearest / total)
        potentials = np.minimum(nearest[None, :], _squared_distances(x[candidates], x))
        pick = int(potentials.sum(axis=1).argmin())
        centres[c], nearest = x[candidates[pick]], potentials[pick]
    return centres


def _lloyd(x: np.ndarray, centres: np.ndarray, iterations: int) -> tuple[np.ndarray, float]:
    assigned = np.full(len(x), -1)
    distances = _squared_distances(x, centres)
    for _ in range(iterations):
        moved = distances.argmin(axis=1)
        if np.array_equal(moved, assigned):
            break
        assigned = moved
        for c in range(len(centres)):
            members = x[assigned == c]
            if len(members):
                centres[c] = members.mean(axis=0)
        distances = _squared_distances(x, centres)
    return assigned, float(distances[np.arange(len(x)), assigned].sum())


def typicality(x: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """1 / mean Euclidean distance to each row's ``k`` nearest other rows (fewer in a small set)."""
    n = len(x)
    if n <= 1:
        return np.ones(n, dtype=np.float32)
    k = min(k, n - 1)
    distances = np.sqrt(_squared_distances(x, x))
    np.fill_diagonal(distances, np.inf)
    nearest = np.partition(distances, k - 1, axis=1)[:, :k]
    scores: np.ndarray = (1.0 / (nearest.mean(axis=1) + 1e-8)).astype(np.float32)
    return scores


def typiclust(x: np.ndarray, labelled: np.ndarray, clusters: int, seed: int = SEED) -> list[int]:
    """Rows to label next: the most typical unlabelled row of each cluster no labelled row is in,
    largest cluster first (ties: lower cluster number). ``x``: the projected embeddings;
    ``labelled``: a boolean mask. As many rows as there are uncovered clusters of MIN_CLUSTER or more."""
    assigned = kmeans(x, clusters, seed)
    covered = set(assigned[labelled].tolist())
    sizes = np.bincount(assigned, minlength=int(assigned.max()) + 1)
    candidates = [c for c in range(len(sizes)) if c not in covered and sizes[c] >= MIN_CLUSTER]
    picks = []
    for c in sorted(candidates, key=lambda c: (-sizes[c], c)):
        members = np.flatnonzero(assigned == c)
        scores = typicality(x[members])
        scores[labelled[members]] = -np.inf
        if np.isfinite(scores.max()):
            picks.append(int(members[int(scores.argmax())]))
    return picks


def duplicate_neighbours(unit: np.ndarray, threshold: float = DUPLICATE_COSINE, chunk: int = 1024) -> list[list[int]]:
    """For each row, the other rows whose cosine similarity with it is at least ``threshold``."""
    found: list[list[int]] = [[] for _ in range(len(unit))]
    for start in range(0, len(unit), chunk):
        similar = unit[start : start + chunk] @ unit.T
        rows, cols = np.nonzero(similar >= threshold)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            if start + r != c:
                found[start + r].append(c)
    return found


@dataclass(frozen=True)
class Embedded:
    """A snapshot of the embeddings the page has: key -> row of ``vectors`` (plain view, any scale).

    What is costly is computed once per snapshot (the projection, the duplicates) or once per
    number of clusters (k-means), and kept while the snapshot is the page's current one."""

    keys: tuple[str, ...]
    vectors: np.ndarray
    threshold: float = DUPLICATE_COSINE
    _picks: dict[tuple[int, frozenset[int]], list[int]] = field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def row(self) -> dict[str, int]:
        return {key: n for n, key in enumerate(self.keys)}

    @cached_property
    def unit(self) -> np.ndarray:
        return unit_rows(self.vectors)

    @cached_property
    def projected(self) -> np.ndarray:
        return project(self.unit)

    @cached_property
    def duplicates(self) -> list[list[int]]:
        return duplicate_neighbours(self.unit, self.threshold)

    def typical(self, labelled: Iterable[str], clusters: int) -> list[str]:
        """TypiClust's next picks (keys), given the keys labelled so far."""
        rows = frozenset(self.row[k] for k in labelled if k in self.row)
        remembered = (clusters, rows)
        if remembered not in self._picks:
            mask = np.zeros(len(self.keys), dtype=bool)
            mask[list(rows)] = True
            self._picks.clear()  # one answer kept: the next look usually asks the same
            self._picks[remembered] = typiclust(self.projected, mask, clusters)
        return [self.keys[n] for n in self._picks[remembered]]


@dataclass(frozen=True)
class Plan:
    """The order of the images still to label, and the near-duplicates each one stands for."""

    order: list[str]
    stacks: dict[str, list[str]]
    typical: int
    """How many of its places TypiClust chose (the first ones, but for the random tenth)."""


def interleave(primary: Sequence[str], shuffled: Sequence[str], every: int = RANDOM_EVERY) -> list[str]:
    """``primary``'s order with every ``every``-th place (the 10th, 20th, ...) given to the next
    image of ``shuffled`` not placed yet; each key once."""
    placed: set[str] = set()
    order: list[str] = []
    first, second = iter(primary), iter(shuffled)
    total = len(set(primary) | set(shuffled))
    while len(order) < total:
        source = second if (len(order) + 1) % every == 0 else first
        for key in source:
            if key not in placed:
                break
        else:  # that source is spent: the other has the rest
            source = first if source is second else second
            key = next((k for k in source if k not in placed), "")
            if not key:
                break
        placed.add(key)
        order.append(key)
    return order


def plan(
    todo: Sequence[str],
    shuffled: Sequence[str],
    labelled: Iterable[str],
    embedded: Embedded | None,
    typical_clusters: int | None,
    every: int = RANDOM_EVERY,
) -> Plan:
    """The page's default order of the images still to label (``todo``, in the order that follows
    the typical phase: margin, or a shuffle while the model has not earned trust; ``shuffled``:
    the same images in a fixed shuffle).

    ``typical_clusters`` (None: the typical phase is over): TypiClust's picks among the embedded
    images come first; then ``todo``'s order; every ``every``-th place is ``shuffled``'s; then each
    embedded image whose near-duplicate came earlier is taken out of the order into that one's stack.
    """
    todo_set = set(todo)
    picks: list[str] = []
    if embedded is not None and typical_clusters:
        picks = [k for k in embedded.typical(labelled, typical_clusters) if k in todo_set]
    chosen = set(picks)
    primary = picks + [k for k in todo if k not in chosen]
    same = not picks and len(primary) == len(shuffled) and primary == list(shuffled)
    order = primary if same else interleave(primary, shuffled, every)  # a shuffle's tenth is itself
    if embedded is None:
        return Plan(order, {}, len(picks))
    kept: list[str] = []
    stacks: dict[str, list[str]] = {}
    stands_for: dict[int, str] = {}  # embedded row of a representative -> its key
    rows = embedded.row
    for key in order:
        row = rows.get(key)
        if row is not None:
            representative = next((stands_for[n] for n in embedded.duplicates[row] if n in stands_for), None)
            if representative is not None:
                stacks[representative].append(key)
                continue
            stands_for[row] = key
            stacks[key] = []
        kept.append(key)
    return Plan(kept, {k: v for k, v in stacks.items() if v}, sum(1 for key in kept if key in chosen))
