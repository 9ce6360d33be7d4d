"""The page's model desk: the gate's reports, a retrain from the labels just given, and install.

Retrain runs the same steps as the command line (dataset build -> retrain -> gate) on a thread,
one at a time, and reports which step it is on; Install puts a candidate that passed the gate
into the local model directory, where the running inference service hot-reloads it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fieldlens_core.errors import FieldlensError, ModelPackageError
from fieldlens_core.model_install import install_package
from fieldlens_core.model_package import current_package
from fieldlens_core.safe_paths import UnsafePathError, plain_name
from fieldlens_retrain.decisions import read_decisions
from fieldlens_retrain.gate import DEFAULT_RULES, GateRules

log = logging.getLogger(__name__)

REPORT_FILES = ("confusion-candidate.png", "confusion-current.png", "learning-curve.png")


class DeskError(FieldlensError, ValueError):
    """A retrain or an install the desk cannot do now (the message says why)."""


@dataclass
class RetrainStatus:
    state: str = "idle"  # idle | running | done | failed
    stage: str = ""
    started: float | None = None
    finished: float | None = None
    message: str = ""
    version: str | None = None
    history: list[str] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    """Identical photos with different labels that the dataset build left out (shown for a person to decide)."""

    def to_json(self) -> dict[str, Any]:
        elapsed = None if self.started is None else (self.finished or time.time()) - self.started
        return {
            "state": self.state,
            "stage": self.stage,
            "elapsed_s": None if elapsed is None else round(elapsed, 1),
            "message": self.message,
            "version": self.version,
            "history": list(self.history),
            "conflicts": list(self.conflicts),
        }


@dataclass(frozen=True)
class DeskPaths:
    field_data: Path
    model_dir: Path
    models_dir: Path
    cache_dir: Path
    base: Path | None = None
    rules: GateRules = DEFAULT_RULES
    """What the gate asks before it publishes, as `fieldlens retrain` does (README, "The gate")."""


class ModelDesk:
    """Thread-safe: the page calls it from its worker threads while a retrain runs on its own."""

    def __init__(self, paths: DeskPaths) -> None:
        self.paths = paths
        self._lock = threading.Lock()  # held for each change of ``status``
        self.status = RetrainStatus()
        self._thread: threading.Thread | None = None

    # -- reports ----------------------------------------------------------------------------
    def decisions(self) -> list[dict[str, Any]]:
        """The gate's verdicts, newest first (fieldlens_retrain.decisions)."""
        return read_decisions(self.paths.models_dir)

    def reports(self) -> list[dict[str, Any]]:
        """Every gate report under ``<models>/reports/``, newest version first.

        Each carries the images it was scored on (``evaluated_on``); ``comparable`` says whether
        every listed report was scored on the same ones, so the page never ranks figures measured
        on different images against each other without saying so."""
        found = []
        for path in (self.paths.models_dir / "reports").glob("*/report.json"):
            try:
                document = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                log.warning("skipping report %s: %s", path, exc)
                continue
            version = path.parent.name
            document["pictures"] = [name for name in REPORT_FILES if (path.parent / name).exists()]
            document["installable"] = bool(document.get("published")) and (self.paths.models_dir / version).is_dir()
            found.append(document)
        sets = {str((d.get("evaluated_on") or {}).get("set")) for d in found}
        for document in found:
            document["comparable"] = len(sets) <= 1
        return sorted(found, key=lambda d: _version_key(str(d.get("version", "0"))), reverse=True)

    def report_file(self, version: str, name: str) -> Path:
        """A report's picture; DeskError (404) for anything else."""
        try:
            plain_name(version)
        except UnsafePathError:
            raise DeskError(f"no report {version!r}") from None
        if name not in REPORT_FILES:
            raise DeskError(f"no report file {name!r}")
        path = self.paths.models_dir / "reports" / version / name
        if not path.is_file():
            raise DeskError(f"report {version} has no {name}")
        return path

    def current(self) -> dict[str, str] | None:
        package = current_package(self.paths.model_dir)
        return {"name": package.card.name, "version": package.card.version} if package else None

    # -- retrain ----------------------------------------------------------------------------
    def start_retrain(self) -> None:
        """Dataset build -> retrain -> gate, on a thread; DeskError while one is running."""
        with self._lock:
            if self.status.state == "running":
                raise DeskError("a retrain is running already")
            self.status = RetrainStatus(state="running", stage="dataset", started=time.time())
            self._thread = threading.Thread(target=self._retrain, name="retrain", daemon=True)
            self._thread.start()

    def retrain_status(self) -> dict[str, Any]:
        """The retrain's progress as the page shows it, taken whole (never half of a stage's change)."""
        with self._lock:
            return self.status.to_json()

    def wait(self, timeout_s: float | None = None) -> RetrainStatus:
        if self._thread is not None:
            self._thread.join(timeout_s)
        return self.status

    def _stage(self, stage: str) -> None:
        with self._lock:
            self.status.stage = stage
            self.status.history.append(f"{stage} (began at {time.time() - (self.status.started or 0):.0f} s)")

    def _retrain(self) -> None:
        from fieldlens_retrain.dataset import build_manifest, write_manifest
        from fieldlens_retrain.pipeline import run_retrain

        paths = self.paths
        try:
            self._stage("dataset")
            package = current_package(paths.model_dir)
            manifest = build_manifest(paths.field_data, {}, paths.base, package.labels if package else None)
            with self._lock:
                self.status.conflicts = [c.model_dump() for c in manifest.conflicts]
            manifest_path = paths.models_dir / "dataset-from-page.json"
            paths.models_dir.mkdir(parents=True, exist_ok=True)
            write_manifest(manifest, manifest_path)
            report = run_retrain(
                manifest_path, paths.models_dir, paths.model_dir, paths.cache_dir, paths.rules, on_stage=self._stage
            )
            with self._lock:
                self.status.state, self.status.version = "done", report.version
                self.status.message = f"{report.decision.reason}. {report.decision.sentence()}"
        except Exception as exc:  # shown on the page; the server goes on
            log.exception("retrain from the page failed")
            with self._lock:
                text = exc.one_line() if isinstance(exc, FieldlensError) else f"{type(exc).__name__}: {exc}"
                self.status.state, self.status.message = "failed", text
        finally:
            with self._lock:
                self.status.finished = time.time()

    # -- install ----------------------------------------------------------------------------
    def install(self, version: str) -> dict[str, str]:
        """Install a candidate the gate published; DeskError otherwise."""
        report = next((r for r in self.reports() if r.get("version") == version), None)
        if report is None or not report["installable"]:
            raise DeskError(f"{version!r} is not a candidate that passed the gate")
        try:  # the same checks as `model install` and the device: a package that fails never becomes current
            card = install_package(self.paths.models_dir / plain_name(version), self.paths.model_dir)
        except ModelPackageError as exc:
            raise DeskError(f"{version} is not installed: {exc.one_line()}") from None
        log.info("installed %s %s from the page", card.name, card.version)
        return {"name": card.name, "version": card.version}


def _version_key(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (0,)
