"""Dynamic batching: requests that wait at the same moment share one ONNX Runtime run.

Only one run is in progress at a time, so ORT's intra-op threads never compete with each
other; connection threads decode and preprocess in parallel (Pillow releases the GIL).
There is no batching thread: the caller that finds no run in progress becomes the leader
and runs what is queued, in batches, until its own result is in; then it hands the lead to
the oldest caller still waiting and returns. A lone request thus runs at once on its own
thread (no hand-off, no added latency), under a burst whatever queued meanwhile runs
together, which costs less per image, and no caller runs more than the batches ahead of its
own item: under sustained load a leader is never kept busy with everyone else's work.

Invariant: while items are pending, exactly one caller leads (``_running``), either running
batches or woken to start; it is handed on, never dropped, under the lock that guards the queue.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from itertools import groupby

import numpy as np

from fieldlens_core.model import LoadedModel

log = logging.getLogger(__name__)


@dataclass
class _Item:
    model: LoadedModel
    tensor: np.ndarray
    wake: threading.Event = field(default_factory=threading.Event)  # its result is in, or it now leads
    finished: bool = False
    logits: np.ndarray | None = None
    error: BaseException | None = None


class BatchRunner:
    def __init__(self, max_batch: int = 2) -> None:
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[_Item] = []
        self._running = False
        self.batches_run = 0
        self.items_run = 0

    def predict(self, model: LoadedModel, tensor: np.ndarray) -> np.ndarray:
        """Logits for one (1, C, H, W) tensor, computed in whichever batch it lands in."""
        item = _Item(model, tensor)
        with self._lock:
            self._pending.append(item)
            lead = not self._running
            self._running = True
        if lead:
            self._lead(item)
        while not item.finished:
            item.wake.wait()
            if not item.finished:  # handed the lead: run batches until this item's result is in
                item.wake.clear()
                self._lead(item)
        if item.error is not None:
            raise item.error
        assert item.logits is not None
        return item.logits

    def _lead(self, own: _Item) -> None:
        while True:
            with self._lock:  # the same lock as the append: no item can be left without a leader
                if own.finished:
                    if self._pending:
                        self._pending[0].wake.set()  # the oldest waiting caller leads next
                    else:
                        self._running = False
                    return
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
            # a model reload can interleave: only items for the same model share a run
            for _, group in groupby(batch, key=lambda item: id(item.model)):
                self._run_group(list(group))

    def _run_group(self, items: list[_Item]) -> None:
        model = items[0].model
        try:
            if model.max_batch == 1 or len(items) == 1:
                results = [model.predict(item.tensor) for item in items]
            else:
                results = list(model.predict_batch(np.concatenate([item.tensor for item in items])))
            for item, result in zip(items, results, strict=True):
                item.logits = result
            self.batches_run += 1
            self.items_run += len(items)
        except Exception as exc:
            log.exception("model run failed")
            for item in items:
                item.error = exc
        finally:
            for item in items:
                item.finished = True
                item.wake.set()
