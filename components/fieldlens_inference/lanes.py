"""Runs side by side: ONNX Runtime's threads are lanes, one per core, shared by the requests in flight.

A request alone in the service takes every lane: one wide run on all the cores, the lowest
latency. Requests in flight together take one lane each: narrow runs, one thread each, side by
side. Measured on a 2-vCPU Xeon with the default fp32 model (components/fieldlens_bench/README.md,
"The edge path"): a wide run takes 4.3 ms and 8.1 ms of CPU, a narrow one 6.9 ms and 6.8 ms of CPU.
A wide run's threads wait for each other at every step, so a decode or a second run that preempts
one of them stalls both: beside a decode, a wide run took up to 12 ms. Narrow runs wait for no
one. In process, callers that each decode and classify: 2 at a time 207/s against 118-128/s for
the dynamic batching this replaced (one run at a time, batches of 2 on both cores); 4 at a time
193-203/s against 144-150/s; 1 at a time the same (164-171/s against 162-165/s).

"In flight" counts a request from the moment it enters, before its decode, until its run ends (or
its decode fails): the decode of the next request is what a wide run must not share the cores with.

Invariant: lanes freed by a run go first to the requests waiting for one, in arrival order, under
the lock that counts them; so a request waits only while every lane is taken, and none is skipped.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from fieldlens_core.model import Classification, LoadedModel


def lanes_for(threads: int) -> int:
    """The lanes of a service whose wide run has ``threads`` threads (0: one per CPU it may use)."""
    return threads or len(os.sched_getaffinity(0))


@dataclass
class _Waiter:
    turn: threading.Event = field(default_factory=threading.Event)
    lanes: int = 0  # set by the run that hands it its lanes, before ``turn``


class LaneRunner:
    def __init__(self, lanes: int = 1) -> None:
        if lanes < 1:
            raise ValueError(f"lanes must be at least 1, not {lanes}")
        self.lanes = lanes
        self._lock = threading.Lock()
        self._free = lanes
        self._in_flight = 0
        self._waiting: deque[_Waiter] = deque()

    def classify(
        self, model: LoadedModel, image: bytes | Image.Image, k: int, content_type: str | None = None
    ) -> Classification:
        """``model.classify`` with its run on the lanes: wide when this request is alone, else narrow."""
        with self._lock:
            self._in_flight += 1
        ran = False

        def run(tensor: np.ndarray) -> np.ndarray:
            nonlocal ran
            ran = True
            taken = self._acquire()
            try:
                return model.predict(tensor, narrow=taken < self.lanes)
            finally:
                self._release(taken)  # and out of flight

        try:
            return model.classify(image, k, content_type, predict=run)
        finally:
            if not ran:  # its decode failed
                with self._lock:
                    self._in_flight -= 1

    def _acquire(self) -> int:
        with self._lock:
            if not self._waiting and self._free:
                return self._take_locked()
            waiter = _Waiter()
            self._waiting.append(waiter)
        waiter.turn.wait()
        return waiter.lanes

    def _take_locked(self) -> int:
        """Every lane for a request alone in the service with every lane free, else one."""
        taken = self.lanes if self._free == self.lanes and self._in_flight == 1 else 1
        self._free -= taken
        return taken

    def _release(self, taken: int) -> None:
        with self._lock:
            self._in_flight -= 1
            self._free += taken
            while self._waiting and self._free:
                waiter = self._waiting.popleft()
                waiter.lanes = self._take_locked()
                waiter.turn.set()
