"""Keeps the current model package loaded and swaps in new versions atomically.

Requests take a reference to the current :class:`~fieldlens_core.model.LoadedModel` when they start, so a swap
never changes the model under a request in flight: the old session lives until its last
request finishes. Every load, at start-up and on each hot reload, goes through
:func:`~fieldlens_core.model_check.check_package` for the variant served (the same check
`model install` and the device's Startup step run, and the session it loads is the one
served): a package that fails is logged with the reason and the current model keeps serving;
at start-up the component exits with it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from fieldlens_core.errors import ModelPackageError
from fieldlens_core.model import LoadedModel
from fieldlens_core.model_check import check_package
from fieldlens_core.model_package import CARD_FILE, resolve_package_dir

log = logging.getLogger(__name__)


def _fingerprint(model_dir: Path) -> tuple[str, int, int] | None:
    """What changes when a new package lands: where `current` points and the card's identity."""
    package_dir = resolve_package_dir(model_dir)
    try:
        stat = (package_dir / CARD_FILE).stat()
    except OSError:
        return None
    return (str(package_dir), stat.st_ino, stat.st_mtime_ns)


class ModelManager:
    def __init__(self, model_dir: Path, variant: str = "fp32", threads: int = 0, spinning: bool = False) -> None:
        self._model_dir = model_dir
        self._variant = variant
        self._threads = threads
        self._spinning = spinning
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
        log.info("serving model %s", self._model.info)
        return self._model

    def reconfigure(self, variant: str, threads: int) -> None:
        """Serve another variant or thread count (a live configuration update)."""
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
        log.info("model reloaded: %s -> %s", previous.info if previous else None, candidate.info)
        return True

    def _load(self) -> LoadedModel:
        """The served variant of the current package, checked (ModelPackageError with the reason)."""
        checked = check_package(self._model_dir, [self._variant], threads=self._threads, spinning=self._spinning)
        return checked.models[self._variant]

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
