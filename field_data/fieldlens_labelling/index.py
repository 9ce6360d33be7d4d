"""What the labelling page shows: every field image with its suggestions, scores and label, in order.

Built once from the field-data directory (through :class:`FieldDataDir`, the only code that
reads sidecars), kept current by the page's own writes, and brought up to date with what other
writers did (``fieldlens label import``, a device keeping new images, the uploader removing what
it shipped) by :meth:`LabelIndex.refresh`, which the page calls on each look at its state. That
look costs a stat per day directory when nothing changed: every writer replaces a sidecar by a
rename (``atomic_write``), which moves its day directory's mtime, so only the days whose mtime
moved are listed again, and of those only the sidecars whose inode or mtime moved are read again.
Orders:

- ``useful`` (the default), following what the low-budget active-learning literature measured
  (:mod:`fieldlens_labelling.typical`): while labels are few (fewer than TYPICAL_UNTIL), the
  *typical* images first (TypiClust on the backbone's embeddings: the densest image of each
  cluster no label covers yet, largest cluster first); then margin (the smallest gap between the
  model's top two classes first, boundary frames first, taken round-robin across the predicted
  classes) once the model has earned it, a fixed shuffle until then; every tenth place of the
  order is the shuffle's, so the labels given always hold a uniform sample; and an image whose
  embedding nearly coincides with one earlier in the order is not listed but goes in that one's
  *stack*, labelled with it in one go. Without embeddings (the train extra not installed, or
  not computed yet: :mod:`fieldlens_labelling.embedded` computes them lazily on a thread) there
  is no typical phase and no stack. The page judges the model by the labels people give: once
  TRUST_AFTER of them have been given to images with a prediction and at least TRUST_AGREEMENT
  of those agree with it, margin follows the typical phase. A model trained far from its field
  (the loop demo's base model) makes uncertainty point at its own confusions, and then every
  uncertainty order trailed random order (README, "Labels saved by the order", has the figures);
- ``typical``: TypiClust all the way (with the random tenth and the stacks);
- ``uncertain``: continuous mode's event-boundary frames first (where the smoothed decision
  changed: the model hesitating between an object and the next, or nothing), then the rest,
  each most uncertain first, by the mean of the three uncertainty scores the sampling policy
  uses (least confidence, margin, normalised entropy), each 0 to 1, taken round-robin across
  the predicted classes (pure uncertainty spends the first labels on the one or two classes the
  model confuses most, and a retrain needs every class early);
- ``least_confidence``, ``margin``, ``entropy``: one of them alone;
- ``random``: a fixed shuffle (by a hash of the image id): a representative sample;
- ``newest``; ``class`` (by predicted label, then most uncertain); ``device`` (by thing, then newest).

Unlabelled images come before labelled ones in every order.

Items are by image key (:func:`~fieldlens_fielddata.directory.image_key`): ``<thing>/<image_id>``
below a bucket's mirror, so two devices' images that share an id are two items.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from fieldlens_core.messages import Prediction
from fieldlens_core.uncertainty import Uncertainty
from fieldlens_fielddata.directory import (
    SIDECAR_SUFFIX,
    FieldDataDir,
    device_directories,
    image_key,
    image_time,
    is_image_id,
)
from fieldlens_fielddata.sidecar import Sidecar, SidecarError
from fieldlens_labelling.typical import Embedded, plan

if TYPE_CHECKING:
    from fieldlens_labelling.embedded import PageEmbeddings

log = logging.getLogger(__name__)

Order = Literal[
    "useful", "typical", "uncertain", "least_confidence", "margin", "entropy", "random", "newest", "class", "device"
]
MAX_LISTED_CLASSES = 100
ORDERS: tuple[Order, ...] = (
    "useful",
    "typical",
    "uncertain",
    "least_confidence",
    "margin",
    "entropy",
    "random",
    "newest",
    "class",
    "device",
)

Stamp = tuple[int, int]
"""(st_ino, st_mtime_ns) of a day directory or a sidecar when the index last read it."""

RACY_NS = 2_000_000_000
"""A file system stamps mtimes from a coarse clock (a few ms on ext4, 2 s on FAT), so a second change
within the same tick as the last look leaves the mtime where it was; and a sidecar's rename can get
back the inode its previous rename freed. A stamp this recent (ns) is therefore not trusted: the day
or sidecar is looked at again next time, until its mtime is old enough that a change would move it."""


def trusted_stamp(stat: os.stat_result, now_ns: int) -> Stamp | None:
    """The stamp to compare the next look against, or None (look again) while it is too recent."""
    return None if now_ns - stat.st_mtime_ns < RACY_NS else (stat.st_ino, stat.st_mtime_ns)


@dataclass
class Day:
    """What the index last saw of one day directory."""

    stamp: Stamp | None
    keys: set[str]


@dataclass
class Item:
    image_id: str
    thing: str
    timestamp: str
    reason: str
    prediction: str | None
    suggestions: list[Prediction]
    scores: dict[str, float]
    label: str | None
    excluded: bool
    revision: int
    directory: FieldDataDir = field(repr=False)
    boundary: bool = False  # a continuous-mode event's boundary frame
    stamp: Stamp | None = field(default=None, repr=False, compare=False)  # its sidecar's, when read

    @cached_property
    def key(self) -> str:
        """Its identity, the page's ``id`` (:func:`image_key`); computed once (an Item is not changed)."""
        return image_key(self.directory.thing, self.image_id)

    @cached_property
    def shuffled(self) -> bytes:
        """Its place in the fixed shuffle (``random``): a hash of its key, computed once per Item."""
        return hashlib.sha256(self.key.encode()).digest()

    @property
    def done(self) -> bool:
        """Labelled, or set aside as unusable."""
        return self.label is not None or self.excluded

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.key,
            "thing": self.thing,
            "timestamp": self.timestamp,
            "reason": self.reason,
            "prediction": self.prediction,
            "suggestions": [{"label": p.label, "confidence": round(p.confidence, 4)} for p in self.suggestions],
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
            "label": self.label,
            "excluded": self.excluded,
            "revision": self.revision,
            "boundary": self.boundary,
        }


def item_of(sidecar: Sidecar, directory: FieldDataDir) -> Item:
    suggestions = sidecar.predictions
    if not suggestions and sidecar.prediction:
        suggestions = [Prediction(label=sidecar.prediction, confidence=sidecar.confidence)]
    return Item(
        image_id=sidecar.image_id,
        thing=directory.thing or sidecar.thing,  # the mirror's directory, where the device could write
        timestamp=sidecar.timestamp or "",
        reason=sidecar.reason,
        prediction=sidecar.prediction,
        suggestions=suggestions,
        scores=Uncertainty(suggestions).scores(),
        label=sidecar.trusted_label,
        excluded=sidecar.excluded,
        revision=sidecar.revision,
        directory=directory,
        boundary=sidecar.event_role == "boundary",
    )


SORT_KEYS: dict[Order, Callable[[Item], tuple[object, ...]]] = {
    "uncertain": lambda i: (not i.boundary, -i.scores["uncertain"], i.key),
    "least_confidence": lambda i: (-i.scores["least_confidence"], i.key),
    "margin": lambda i: (-i.scores["margin"], i.key),
    "entropy": lambda i: (-i.scores["entropy"], i.key),
    "random": lambda i: (i.shuffled,),  # the same shuffle on every load
    "newest": lambda i: (_reverse(i.image_id), i.key),
    "class": lambda i: (i.prediction or "", -i.scores["uncertain"], i.key),
    # the default order's margin part (after the typical phase, once the model is trusted)
    "useful": lambda i: (not i.boundary, -i.scores["margin"], i.key),
    "device": lambda i: (i.thing, _reverse(i.image_id), i.key),
}


def round_robin(ranked: list[Item]) -> list[Item]:
    """The first of each predicted class, then the second of each, and so on (each class's own
    order kept; classes in the order their first item comes)."""
    by_class: dict[str, list[Item]] = {}
    for item in ranked:
        by_class.setdefault(item.prediction or "", []).append(item)
    queues = list(by_class.values())
    return [queue[n] for n in range(max((len(q) for q in queues), default=0)) for queue in queues if n < len(queue)]


def _reverse(text: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in text)


class LabelIndex:
    """Items by image key (:attr:`Item.key`); thread-safe: the page answers on several worker threads
    while :meth:`start_loading`'s thread indexes. Every change holds ``_lock``, and an Item is never
    changed once in the index (a write puts in a new one), so a reader holding one sees it whole.

    Reading 100,000 sidecars takes seconds (listing, reading and parsing each cost about as much
    on an SD card or a small VM), so :meth:`start_loading` indexes on a thread, a chunk at a
    time, and the page serves what is indexed so far from the first chunk on: the first image
    shows in well under a second, and the order covers every image once ``loaded`` is set.
    """

    CHUNK = 500
    # Judgement, not a measurement: none of the loop demo's models came near this agreement, and
    # uncertainty trailed a random sample with every one of them (README, "Labels saved by the order").
    TRUST_AFTER = 20
    TRUST_AGREEMENT = 0.7
    TYPICAL_UNTIL = 100
    """Labels given below which ``useful`` takes the typical images first (README, "Labels saved by
    the order": TypiClust's advantage is a low-budget one)."""
    TYPICAL_BATCH = 25
    """TypiClust clusters the embeddings into (labels given + this) clusters: as many as there will
    be labels once the next batch is done; the page recomputes them as labels come."""

    def __init__(self, items: Iterable[Item] = ()) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, Item] = {}
        # kept as items come and labels change, so that a write or a progress report costs the
        # same with 100 images as with 100,000 (counting them on each write grows with the images)
        self._given: Counter[str] = Counter()
        self._excluded = 0
        self._judged = 0  # labels given to images with a prediction
        self._agreed = 0  # ... that agree with it
        self._suggested: set[str] = set()
        self._root: Path | None = None
        self._days: dict[Path, Day] = {}
        self._scanning = threading.Lock()  # one walk of the directory at a time
        self._unreadable: set[str] = set()  # keys of sidecars already reported as unreadable
        self.loaded = threading.Event()
        self.load_error: str | None = None
        self.embeddings: PageEmbeddings | None = None
        """Set by the page (LabelServer) where it computes embeddings for ``useful`` and ``typical``."""
        self._put([(item, None) for item in items])

    @classmethod
    def load(cls, root: Path) -> LabelIndex:
        """Every readable pair under ``root`` (a device's directory or a bucket's mirror, whose
        labels BucketLabels.mirror made the trusted ones), read now."""
        index = cls()
        index._load(root)
        return index

    def start_loading(self, root: Path) -> threading.Thread:
        """Index ``root`` on a thread; returns once the first chunk (or everything, if less) is in."""
        first = threading.Event()
        thread = threading.Thread(target=self._load, args=(root, first), name="label-index", daemon=True)
        thread.start()
        first.wait()
        return thread

    def _load(self, root: Path, first: threading.Event | None = None) -> None:
        self._root = root
        try:
            with self._scanning:
                self._scan(root, first)
        except OSError as exc:  # the directory went away or became unreadable: say so, serve what we have
            self.load_error = f"indexing stopped: {exc}"
        finally:
            self.loaded.set()
            if first is not None:
                first.set()

    def refresh(self) -> None:
        """Take in what other writers changed under ``root`` since the last look (see the module's
        docstring for what that costs). Nothing before the first indexing is done: it is the same walk."""
        if self._root is None or not self.loaded.is_set():
            return
        try:
            with self._scanning:
                self._scan(self._root)
        except OSError as exc:  # keep serving what is indexed; the next look tries again
            log.warning("cannot look at %s again: %s", self._root, exc)

    def _scan(self, root: Path, first: threading.Event | None = None) -> None:
        seen: set[Path] = set()
        for directory in device_directories(root):
            for day in directory.day_directories():
                if self._scan_day(directory, day, first):
                    seen.add(day)
        with self._lock:
            for day in [day for day in self._days if day not in seen]:  # removed since the last look
                for key in self._days.pop(day).keys:
                    self._forget(key)

    def _scan_day(self, directory: FieldDataDir, day: Path, first: threading.Event | None) -> bool:
        """Read what changed in one day directory since the last look; False when it is gone.

        Stamps are taken before what they vouch for is read: a change after the stat moves the
        stamp, and the next look reads it."""
        try:
            stat = os.stat(day)
        except FileNotFoundError:
            return False
        now = time.time_ns()
        with self._lock:
            known = self._days.get(day)
            if known is not None and known.stamp is not None and known.stamp == (stat.st_ino, stat.st_mtime_ns):
                return True
            had = {k: item.stamp for k in (known.keys if known else ()) if (item := self._items.get(k)) is not None}
        try:
            with os.scandir(day) as entries:
                sidecars = [entry for entry in entries if entry.name.endswith(SIDECAR_SUFFIX)]
        except FileNotFoundError:
            return False
        keys: set[str] = set()
        fresh: list[tuple[Item, Stamp | None]] = []
        for entry in sorted(sidecars, key=lambda e: e.name):
            image_id = entry.name[: -len(SIDECAR_SUFFIX)]
            when = image_time(image_id)
            if when is None or not is_image_id(image_id):
                continue
            key = image_key(directory.thing, image_id)
            try:
                file_stat = entry.stat()
            except FileNotFoundError:
                continue  # uploaded and removed since the listing
            stamp = had.get(key)
            if stamp is not None and stamp == (file_stat.st_ino, file_stat.st_mtime_ns):
                keys.add(key)
                continue
            pair = directory.pair_for(image_id, when)
            if pair.sidecar_path.parent != day:
                continue  # filed under another date: the page could not find it to show or label it
            try:
                sidecar = directory.read(pair)
            except FileNotFoundError:
                continue
            except SidecarError as exc:  # skipped (the uploader quarantines it); said once, not on every look
                if key not in self._unreadable:
                    self._unreadable.add(key)
                    log.warning("skipping %s: %s", key, exc)
                continue
            fresh.append((item_of(sidecar, directory), trusted_stamp(file_stat, now)))
            keys.add(key)
            if len(fresh) >= self.CHUNK:
                self._put(fresh)
                fresh = []
                if first is not None:
                    first.set()
        self._put(fresh)
        with self._lock:
            for key in had.keys() - keys:
                self._forget(key)
            self._days[day] = Day(trusted_stamp(stat, now), keys)
        return True

    def _put(self, found: list[tuple[Item, Stamp | None]]) -> None:
        """New items in; changed ones replaced, unless a write through the page has gone in since
        the sidecar was read (its revision is newer: the next look reads the sidecar again)."""
        with self._lock:
            for item, stamp in found:
                known = self._items.get(item.key)
                if known is not None:
                    if item.revision < known.revision:
                        continue
                    self._count(known, -1)
                item.stamp = stamp
                self._items[item.key] = item
                self._count(item, +1)
                self._suggested.update(p.label for p in item.suggestions)

    def _forget(self, key: str) -> None:
        """Drop an image whose sidecar is gone (the caller holds the lock)."""
        item = self._items.pop(key, None)
        if item is not None:
            self._count(item, -1)

    def _count(self, item: Item, sign: int) -> None:
        if item.label is not None:
            self._given[item.label] += sign
            if self._given[item.label] <= 0:
                del self._given[item.label]
        self._excluded += sign * item.excluded
        if item.label is not None and item.prediction is not None:
            self._judged += sign
            self._agreed += sign * (item.label == item.prediction)

    def __len__(self) -> int:
        return len(self._items)

    def label_names(self, suggested: bool) -> set[str]:
        """Labels given so far, and (``suggested``) every label a prediction named."""
        with self._lock:
            return set(self._given) | (self._suggested if suggested else set())

    def get(self, key: str) -> Item | None:
        """The item of an image key (the page's ``id``)."""
        with self._lock:
            return self._items.get(key)

    def trusted(self) -> bool:
        """Whether people agree with the model enough for its uncertainty to mean something."""
        with self._lock:
            judged, agreed = self._judged, self._agreed
        return judged >= self.TRUST_AFTER and agreed >= self.TRUST_AGREEMENT * judged

    def useful_is(self) -> str:
        """What ``useful`` stands for now: ``typical``, then ``margin`` or ``random`` (see the module's docstring)."""
        with self._lock:
            given = sum(self._given.values())
        if given < self.TYPICAL_UNTIL and self._snapshot() is not None:
            return "typical"
        return "margin" if self.trusted() else "random"

    def _snapshot(self) -> Embedded | None:
        snapshot = self.embeddings.snapshot() if self.embeddings is not None else None
        return snapshot if snapshot is not None and snapshot.keys else None

    def embedding_candidates(self, limit: int) -> list[tuple[str, Path]]:
        """The images the page's embeddings should cover (key, image path), at most ``limit``: the
        labelled ones first (they say which clusters are covered), then the others in the fixed
        shuffle, so that what is embedded is a uniform sample. Waits for the first indexing."""
        self.loaded.wait()
        with self._lock:
            items = list(self._items.values())
        items.sort(key=lambda i: (i.label is None, *SORT_KEYS["random"](i)))
        wanted = []
        for item in items:
            when = image_time(item.image_id)
            if when is not None and not item.excluded:
                wanted.append((item.key, item.directory.pair_for(item.image_id, when).image_path))
            if len(wanted) >= limit:
                break
        return wanted

    def ordered(self, order: Order) -> list[Item]:
        """Every item in ``order`` (for ``useful`` and ``typical``, without the stacked ones: :meth:`planned`)."""
        return self.planned(order)[0]

    def planned(self, order: Order) -> tuple[list[Item], dict[str, list[Item]]]:
        """The items in ``order``, what is done last; and for ``useful`` and ``typical``, the
        near-duplicates each listed image stands for (key -> its stack, which is not listed)."""
        with self._lock:
            items = list(self._items.values())
        if order in ("useful", "typical"):
            return self._planned(order, items)
        key = SORT_KEYS[order]
        ranked = sorted(items, key=lambda i: (i.done, *key(i)))
        if order != "uncertain":
            return ranked, {}
        todo = [i for i in ranked if not i.done]
        boundary = [i for i in todo if i.boundary]  # sorted first already
        return round_robin(boundary) + round_robin(todo[len(boundary) :]) + ranked[len(todo) :], {}

    def _planned(self, order: Order, items: list[Item]) -> tuple[list[Item], dict[str, list[Item]]]:
        if self.embeddings is not None:
            self.embeddings.wake()  # new images since its last pass get embedded
        snapshot = self._snapshot()
        shuffled = sorted(items, key=lambda i: (i.done, i.shuffled))
        todo = [i for i in shuffled if not i.done]
        labelled = [i.key for i in items if i.label is not None]
        typical = order == "typical" or len(labelled) < self.TYPICAL_UNTIL
        clusters = None
        if snapshot is not None and typical:
            clusters = sum(1 for key in labelled if key in snapshot.row) + self.TYPICAL_BATCH
        if self.trusted():
            after = sorted(todo, key=SORT_KEYS["useful"])
            boundary = [i for i in after if i.boundary]
            after = round_robin(boundary) + round_robin(after[len(boundary) :])
        else:
            after = todo
        chosen = plan([i.key for i in after], [i.key for i in todo], labelled, snapshot, clusters)
        by_key = {i.key: i for i in todo}
        stacks = {key: [by_key[k] for k in stacked] for key, stacked in chosen.stacks.items()}
        return [by_key[k] for k in chosen.order] + shuffled[len(todo) :], stacks

    def update(self, sidecar: Sidecar, key: str | None = None) -> Item:
        """The index after a write through the directory (the new label and revision) of the item
        ``key`` (:attr:`Item.key`; the sidecar's image id where the root is one device's directory).
        The item's stamp stays the old sidecar's, so the next look reads this one sidecar again:
        stamping it now could vouch for a write someone else made just after this one.

        A sidecar older than the item's revision changes nothing: a :meth:`refresh` on another
        thread may have read a later write (``label import``'s) between this write and its update."""
        key = key or sidecar.image_id
        with self._lock:
            known = self._items[key]
            if sidecar.revision < known.revision:
                return known
            item = replace(known, label=sidecar.trusted_label, excluded=sidecar.excluded, revision=sidecar.revision)
            self._count(known, -1)
            self._items[key] = item
            self._count(item, +1)
            return item

    def progress(self, labels: list[str], target_per_class: int) -> dict[str, object]:
        """Labelled / total, counts per class, and how many more labels the weakest class needs
        to reach ``target_per_class`` (or the largest class, if that is smaller). The classes are
        the labels given so far, and the model's when it has at most MAX_LISTED_CLASSES (an
        ImageNet model's 1,000 are not a labelling target)."""
        useful_is = self.useful_is()
        with self._lock:
            counts, total, excluded = Counter(self._given), len(self._items), self._excluded
            judged, agreed = self._judged, self._agreed
        classes = sorted(set(labels if len(labels) <= MAX_LISTED_CLASSES else ()) | set(counts))
        per_class = {label: counts.get(label, 0) for label in classes}
        target = min(target_per_class, max(per_class.values(), default=0)) or target_per_class
        weakest = min(per_class, key=lambda label: per_class[label]) if per_class else None
        return {
            "indexing": not self.loaded.is_set(),
            "index_error": self.load_error,
            "total": total,
            "labelled": sum(counts.values()),
            "excluded": excluded,
            "per_class": per_class,
            "weakest": weakest,
            "weakest_needs": max(0, target - per_class[weakest]) if weakest is not None else 0,
            "target_per_class": target,
            "useful": {
                "is": useful_is,
                "judged": judged,
                "agreed": agreed,
                "trust_after": self.TRUST_AFTER,
                "trust_agreement": self.TRUST_AGREEMENT,
                "typical_until": self.TYPICAL_UNTIL,
                "embeddings": self.embeddings.status() if self.embeddings is not None else {"state": "off"},
            },
        }
