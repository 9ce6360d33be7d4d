"""Keeps the current model package loaded and swaps in new versions atomically.

Requests take a reference to the current :class:`~fieldlens_core.model.LoadedModel` when they start, so a swap
never changes the model under a request in flight: the old session lives until its last
request finishes. Every load, at start-up and on each hot reload, goes through
:func:`~fieldlens_core.model_check.check_package` for the variant served (the same check
`model install` and the device's Startup step run, and the session it loads is the one
served): a package that fails is logged with the reason and the current model keeps serving;
at start-up the component exits with it.

Which graph it serves is chosen at every load (:func:`~fieldlens_core.int8_kernels.choose_variant`):
with ``auto`` (the default), int8 only where this CPU's int8 kernels compute it exactly and it
ran faster than fp32 in a short timing of both on this device, fp32 otherwise. The log and the
ping (the status) say which graph and why.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fieldlens_core.errors import ModelPackageError
from fieldlens_core.int8_kernels import AUTO, choose_variant, int8_kernels
from fieldlens_core.model import LoadedModel, with_narrow_session
from fieldlens_core.model_check import check_package
from fieldlens_core.model_package import CARD_FILE, read_card, resolve_package_dir

log = logging.getLogger(__name__)


def _fingerprint(model_dir: Path) -> tuple[str, int, int] | None:
    """What changes when a new package lands: where `current` points and the card's identity."""
    package_dir = resolve_package_dir(model_dir)
    try:
        stat = (package_dir / CARD_FILE).stat()
    except OSError:
        return None
    return (str(package_dir), stat.st_ino, stat.st_mtime_ns)


TIMING_RUNS = 7
"""Runs of each graph timed at load when ``auto`` may serve either (median): one or two seconds on a Pi 4."""


def time_per_image_ms(models: Mapping[str, LoadedModel], runs: int = TIMING_RUNS) -> dict[str, float]:
    """Median time of one image through each model on this device, in turns (fp32, int8, fp32, ...),
    so that whatever else loads the CPU meanwhile slows each alike. The loads warmed them up."""
    times: dict[str, list[float]] = {variant: [] for variant in models}
    for _ in range(runs):
        for variant, model in models.items():
            probe = np.zeros((1, 3, model.spec.size, model.spec.size), dtype=np.float32)
            started = time.perf_counter()
            model.predict(probe)
            times[variant].append((time.perf_counter() - started) * 1000)
    return {variant: statistics.median(measured) for variant, measured in times.items()}


class ModelManager:
    def __init__(
        self, model_dir: Path, variant: str = AUTO, threads: int = 0, spinning: bool = True, narrow: bool = False
    ) -> None:
        """``narrow``: the served model also gets a one-thread session, for runs side by side (lanes.py)."""
        self._model_dir = model_dir
        self._variant = variant
        self._threads = threads
        self._spinning = spinning
        self._narrow = narrow
        self._model: LoadedModel | None = None
        self._fingerprint: tuple[str, int, int] | None = None
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def current(self) -> LoadedModel | None:
        return self._model  # one attribute read: atomic under the GIL

    def load_initial(self) -> LoadedModel:
        """Load at start-up; raises ModelPackageError so the component fails loudly without a model."""
        with self._reload_lock:
            self._fingerprint = _fingerprint(self._model_dir)
            self._model = self._load()
        log.info("serving model %s, %s: %s", self._model.info, self._model.package.variant, self._model.choice)
        return self._model

    def reconfigure(self, variant: str, threads: int) -> None:
        """Serve another variant (``auto``, ``fp32``, ``int8``) or thread count (a live configuration update)."""
        with self._reload_lock:
            if (variant, threads) == (self._variant, self._threads):
                return
            self._variant, self._threads = variant, threads
            self._fingerprint = None
        self.check_for_update()

    def check_for_update(self) -> bool:
        """Load and swap in the package if it changed since the last look; True when swapped."""
        with self._reload_lock:
            fingerprint = _fingerprint(self._model_dir)
            if fingerprint is None or fingerprint == self._fingerprint:
                return False
            self._fingerprint = fingerprint  # also on failure: retry only when it changes again
            try:
                candidate = self._load()
            except ModelPackageError as exc:
                log.error("new model package not loaded, still serving %s: %s", self._info(), exc)
                return False
            previous, self._model = self._model, candidate
        log.info(
            "model reloaded: %s -> %s, %s: %s",
            previous.info if previous else None,
            candidate.info,
            candidate.package.variant,
            candidate.choice,
        )
        return True

    def _load(self) -> LoadedModel:
        """The graph to serve of the current package, checked and chosen (ModelPackageError with the reason).

        ``auto`` checks and times both graphs only where int8 could be chosen; the one not chosen
        is dropped here."""
        kernels = int8_kernels()
        candidates = [self._variant]
        if self._variant == AUTO:
            variants = read_card(resolve_package_dir(self._model_dir)).variants
            candidates = ["fp32", "int8"] if "int8" in variants and kernels.exact else ["fp32"]
        checked = check_package(self._model_dir, candidates, threads=self._threads, spinning=self._spinning)
        timings = time_per_image_ms(checked.models) if len(candidates) > 1 else None
        choice = choose_variant(self._variant, checked.card.variants, kernels, timings)
        if self._variant == "int8" and not kernels.exact:
            log.warning("serving int8 as configured, although on this CPU (%s) it answers otherwise", kernels.reason)
        served = dataclasses.replace(checked.models[choice.variant], choice=choice.reason)
        return with_narrow_session(served) if self._narrow else served

    def start_watching(self, interval_s: float) -> None:
        def watch() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.check_for_update()
                except Exception:  # the watcher must outlive any one bad package
                    log.exception("model update check failed")

        self._watcher = threading.Thread(target=watch, name="model-watcher", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)

    def _info(self) -> dict[str, str] | None:
        return self._model.info if self._model else None
