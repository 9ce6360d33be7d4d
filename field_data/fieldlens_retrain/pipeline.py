"""`fieldlens retrain`: manifest -> candidate -> evaluation against the current model -> gate -> package.

The report (JSON, Markdown and confusion-matrix PNGs) is written whatever the gate decides;
the package is published (moved to ``<out>/<version>``) only when the gate says so.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fieldlens_core.atomic import atomic_write
from fieldlens_core.model_package import ModelPackage, current_package, load_package, write_card
from fieldlens_retrain.dataset import Manifest, read_manifest
from fieldlens_retrain.embeddings import EmbeddingCache
from fieldlens_retrain.evaluate import GateDecision, PredictionCache, confusion_png, gate, predict_files, score
from fieldlens_retrain.train import DEFAULT_SETTINGS, TrainSettings, next_version, retrain

if TYPE_CHECKING:
    from fieldlens_retrain.sagemaker import SageMakerRetrain

log = logging.getLogger(__name__)


@dataclass
class RetrainReport:
    version: str
    decision: GateDecision
    candidate: dict[str, Any]
    current: dict[str, Any] | None
    package: Path | None
    report_dir: Path
    timings_s: dict[str, float] = field(default_factory=dict)
    embedded: int = 0
    reused: int = 0

    def summary(self) -> list[str]:
        current = f"{self.current['accuracy']:.1%}" if self.current else "n/a"
        return [
            f"candidate {self.version}: accuracy {self.candidate['accuracy']:.1%} on {self.candidate['images']} "
            f"held-out images (current model: {current})",
            self.decision.reason,
            f"embedded {self.embedded} new images, reused {self.reused} cached; "
            + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings_s.items()),
            f"report: {self.report_dir}" + (f"; package: {self.package}" if self.package else ""),
        ]


def run_retrain(
    manifest_path: Path,
    out_dir: Path,
    current_dir: Path | None,
    cache_dir: Path,
    margin: float = 0.02,
    force: bool = False,
    settings: TrainSettings = DEFAULT_SETTINGS,
    name: str | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> RetrainReport:
    """Train a candidate locally, then evaluate, gate and publish it; ``on_stage`` hears each step
    begin (embedding, training, exporting, evaluating), for a progress display."""
    manifest = read_manifest(manifest_path)
    parent = current_package(current_dir)
    cache = EmbeddingCache(cache_dir)
    model_name = name or (parent.card.name if parent and parent.labels == manifest.labels else "fieldlens-classifier")
    result = retrain(manifest, out_dir / ".work", cache, parent, model_name, settings, on_stage)
    if on_stage is not None:
        on_stage("evaluating")
    predictions = PredictionCache(cache_dir)
    report = publish_candidate(manifest, result.package_dir, out_dir, current_dir, margin, force, predictions)
    report.timings_s, report.embedded, report.reused = result.timings_s, result.embedded, result.reused
    write_report(report, manifest)
    return report


def run_sagemaker_retrain(
    runner: SageMakerRetrain,
    manifest_path: Path,
    out_dir: Path,
    current_dir: Path | None,
    epochs: int,
    seed: int,
    margin: float = 0.02,
    force: bool = False,
    report: Callable[[str], None] = log.info,
) -> RetrainReport:
    """Train a candidate on SageMaker, then version, evaluate, gate and publish it here, as a local
    retrain does. TrainingError when the job fails (its failure reason), or its package does not verify."""
    manifest = read_manifest(manifest_path)
    job = runner.wait(runner.start(manifest, epochs, seed), report=report)
    out_dir.mkdir(parents=True, exist_ok=True)
    candidate = runner.fetch(job, Path(tempfile.mkdtemp(prefix=".sagemaker-", dir=out_dir)))
    reversion(candidate, current_package(current_dir))
    return publish_candidate(manifest, candidate, out_dir, current_dir, margin, force)


def reversion(candidate: Path, parent: ModelPackage | None) -> None:
    """The job does not know the current model: version the candidate from it here, as a local retrain does."""
    package = load_package(candidate)
    version = next_version(parent.card if parent else None, package.labels, parent.labels if parent else None)
    fields = package.card.model_dump(exclude={"files"})
    write_card(candidate, {**fields, "version": version, "parent_version": parent.card.version if parent else None})


def publish_candidate(
    manifest: Manifest,
    candidate_dir: Path,
    out_dir: Path,
    current_dir: Path | None,
    margin: float,
    force: bool,
    predictions: PredictionCache | None = None,
) -> RetrainReport:
    """Evaluate a candidate package against the current model on held-out field images; publish it if it wins."""
    parent = current_package(current_dir)
    holdout = manifest.select("val", ("field",)) or manifest.select("val")
    images, truth = [(e.sha256, Path(e.path)) for e in holdout], [e.label for e in holdout]

    def top1(model_dir: Path) -> list[str]:
        if predictions is None:
            return predict_files(model_dir, [path for _, path in images])
        return predictions.top1(model_dir, images)

    candidate = score(truth, top1(candidate_dir), manifest.labels)
    current = score(truth, top1(parent.directory), manifest.labels) if parent and holdout else None
    decision = gate(candidate["accuracy"], current["accuracy"] if current else None, margin, force)

    card = load_package(candidate_dir).card
    metrics = {
        **card.metrics,
        "accuracy": candidate["accuracy"],
        "holdout_images": candidate["images"],
        "per_class": candidate["per_class"],
        "current_model_accuracy": current["accuracy"] if current else None,
    }
    card = write_card(candidate_dir, {**card.model_dump(exclude={"files"}), "metrics": metrics})

    report_dir = out_dir / "reports" / card.version
    report_dir.mkdir(parents=True, exist_ok=True)
    confusion_png(candidate, report_dir / "confusion-candidate.png", f"candidate {card.version}")
    if current and parent:
        confusion_png(current, report_dir / "confusion-current.png", f"current {parent.card.version}")
    package = None
    if decision.publish:
        package = out_dir / card.version
        if package.exists():
            shutil.rmtree(package)
        candidate_dir.rename(package)
    else:
        shutil.rmtree(candidate_dir, ignore_errors=True)
    report = RetrainReport(card.version, decision, candidate, current, package, report_dir)
    write_report(report, manifest, card.parent_version)
    return report


def write_report(report: RetrainReport, manifest: Manifest, parent_version: str | None = None) -> None:
    document = {
        "version": report.version,
        "parent_version": parent_version,
        "dataset": manifest.sha256,
        "published": report.decision.publish,
        "reason": report.decision.reason,
        "candidate": report.candidate,
        "current": report.current,
        "timings_s": report.timings_s,
        "embedded": report.embedded,
        "reused": report.reused,
    }
    atomic_write(report.report_dir / "report.json", json.dumps(document, indent=1).encode())
    atomic_write(report.report_dir / "report.md", ("\n".join(f"- {line}" for line in report.summary()) + "\n").encode())
