"""The page's embeddings of its images, for the default order's typical phase and duplicate stacks.

Computed lazily on one background thread, never at page load: the page lists and orders 100,000
sidecars in seconds, and embedding one image (six views through EfficientNet-Lite0) costs about as
much CPU as a classify request, so embedding them all would take hours. The thread embeds at most
LIMIT images: the labelled ones first (they say which clusters are covered, and the page's
Retrain has usually embedded them already), then the others in the page's fixed shuffle (the
``random`` order), so what is embedded is a uniform sample of the field images; TypiClust's
typical images of a uniform sample of 5,000 are the typical images of the whole. Images outside
it are ordered as before (margin or the shuffle) and never stacked.

It uses the retrain's own EmbeddingCache in the page's ``--cache`` directory, the one the page's
Retrain embeds into, so an image is embedded once for both. Where the train extra (torch, the
backbone's weights) is not installed the embeddings are unavailable, said once in the log and in
the page's state, and the default order is what it was without them.

A snapshot (:class:`~fieldlens_labelling.typical.Embedded`) is published when a pass ends, and
during a long first pass each time the count has grown by half, with its projection and
duplicates computed on this thread, so a look at the order never waits for them.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fieldlens_labelling.typical import Embedded

log = logging.getLogger(__name__)

Embed = Callable[[Sequence[tuple[str, Path]]], dict[str, np.ndarray]]
"""(sha256, image path) pairs -> sha256 -> the plain view's embedding (1280 floats)."""
Candidates = Callable[[int], list[tuple[str, Path]]]
"""(image key, image path) of at most that many images to embed, most wanted first."""

LIMIT = 5000
CHUNK = 32
GROWTH = 1.5


def backbone_embed(cache_dir: Path) -> Embed:
    """The retrain's EmbeddingCache (imported here: it needs the train extra)."""
    from fieldlens_retrain.embeddings import EmbeddingCache

    cache = EmbeddingCache(cache_dir, activations=False)  # up to LIMIT images: 113 KB each the page never trains on

    def embed(items: Sequence[tuple[str, Path]]) -> dict[str, np.ndarray]:
        return {sha: views[0] for sha, views in cache.embed(items, progress=False).items()}

    return embed


class PageEmbeddings:
    """Thread-safe: the page's worker threads read snapshots while this one embeds."""

    def __init__(self, make_embed: Callable[[], Embed], limit: int = LIMIT) -> None:
        self._make_embed = make_embed
        self._limit = limit
        self._lock = threading.Lock()
        self._vectors: dict[str, np.ndarray] = {}  # image key -> plain-view embedding
        self._snapshot: Embedded | None = None
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._candidates: Candidates | None = None
        self.state = "not started"  # not started | embedding | ready | unavailable (the train extra is not installed)
        self.error: str | None = None
        self.pending = 0

    def start(self, candidates: Candidates) -> None:
        """Where the images come from; the thread starts on the first :meth:`wake` (the first look
        at an order that uses embeddings), so a page nobody orders by typicality embeds nothing."""
        self._candidates = candidates

    def wake(self) -> None:
        """Look for images not embedded yet (the page calls this on each look at its order)."""
        if self.state == "unavailable" or self._candidates is None:
            return
        with self._lock:
            self._idle.clear()
            self._wake.set()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, args=(self._candidates,), name="page-embeddings", daemon=True
                )
                self.state = "embedding"
                self._thread.start()

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Until a pass has ended with nothing left to embed (or embeddings are unavailable);
        starts the thread if no look has yet."""
        self.wake()
        return self.state == "unavailable" or self._idle.wait(timeout_s)

    def stop(self) -> None:
        self._stop = True
        self._wake.set()

    def snapshot(self) -> Embedded | None:
        with self._lock:
            return self._snapshot

    def status(self) -> dict[str, object]:
        with self._lock:
            embedded = len(self._vectors)
        return {
            "state": self.state,
            "embedded": embedded,
            "pending": self.pending,
            "limit": self._limit,
            "error": self.error,
        }

    def _run(self, candidates: Candidates) -> None:
        try:
            embed = self._make_embed()
        except Exception as exc:  # ImportError without the train extra; a backbone that will not load
            self.state, self.error = "unavailable", f"{type(exc).__name__}: {exc}"
            log.warning("the page orders without embeddings (no typical phase, no duplicate stacks): %s", self.error)
            self._idle.set()
            return
        while not self._stop:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            try:
                self._pass(embed, candidates)
            except Exception as exc:  # said on the page; the next look tries again
                log.exception("embedding the page's images failed")
                self.error = f"{type(exc).__name__}: {exc}"
            self.pending = 0
            self.state = "ready"
            if not self._wake.is_set():
                self._idle.set()

    def _pass(self, embed: Embed, candidates: Candidates) -> None:
        wanted = candidates(self._limit)
        keys = {key for key, _ in wanted}
        with self._lock:
            for gone in [key for key in self._vectors if key not in keys]:  # removed, or past the limit now
                del self._vectors[gone]
            todo = [(key, path) for key, path in wanted if key not in self._vectors]
        self.pending = len(todo)
        published = len(self._vectors)
        changed = False
        if todo:
            self.state = "embedding"
        for start in range(0, len(todo), CHUNK):
            if self._stop:
                return
            chunk = []
            for key, path in todo[start : start + CHUNK]:
                try:
                    chunk.append((key, hashlib.sha256(path.read_bytes()).hexdigest(), path))
                except OSError:  # uploaded and removed since it was listed
                    continue
            vectors = embed([(sha, path) for _, sha, path in chunk])
            with self._lock:
                for key, sha, _ in chunk:
                    if sha in vectors:
                        self._vectors[key] = np.asarray(vectors[sha], dtype=np.float32)
            changed = True
            self.pending = max(0, len(todo) - start - CHUNK)
            if len(self._vectors) >= max(CHUNK, published * GROWTH) and self.pending:
                self._publish()
                published = len(self._vectors)
        if changed or self._snapshot is None or len(self._snapshot.keys) != len(self._vectors):
            self._publish()

    def _publish(self) -> None:
        with self._lock:
            keys = tuple(sorted(self._vectors))
            vectors = np.stack([self._vectors[k] for k in keys]) if keys else np.zeros((0, 1280), np.float32)
        snapshot = Embedded(keys, vectors)
        if keys:
            _ = snapshot.projected, snapshot.duplicates  # computed here, not on a look at the order
        with self._lock:
            self._snapshot = snapshot
        log.info("the page's order has embeddings of %d images", len(keys))
