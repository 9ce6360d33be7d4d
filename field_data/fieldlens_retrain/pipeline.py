"""`fieldlens retrain`: manifest -> candidate -> evaluation against the current model -> gate -> package.

The report (JSON, Markdown and confusion-matrix PNGs) is written whatever the gate decides;
the package is published (moved to ``<out>/<version>``) only when the gate says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fieldlens_core.atomic import atomic_write
from fieldlens_core.messages import utc_timestamp
from fieldlens_core.model import LoadedModel, load_model
from fieldlens_core.model_package import ModelCard, ModelPackage, current_package, load_package
from fieldlens_retrain.dataset import Manifest, read_manifest
from fieldlens_retrain.decisions import append_decision
from fieldlens_retrain.embeddings import EmbeddingCache
from fieldlens_retrain.evaluate import INT8_CHECKED, HeadAnswers, PredictionCache, as_loaded, confusion_png, score
from fieldlens_retrain.gate import DEFAULT_RULES, GateDecision, GateRules, gate, paired_outcomes
from fieldlens_retrain.learning_curve import LearningCurve, curve_png
from fieldlens_retrain.packaging import finish_fetched_package
from fieldlens_retrain.train import DEFAULT_SETTINGS, TrainResult, TrainSettings, next_version, retrain

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
    evaluated_on: dict[str, Any] = field(default_factory=dict)
    """The images both models were scored on: how many, and a hash of their contents' hashes."""
    dataset_notes: list[str] = field(default_factory=list)
    curve: LearningCurve | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    embedded: int = 0
    reused: int = 0
    memory_peak_mb: float = 0.0
    parent_version: str | None = None
    fine_tune: dict[str, Any] | None = None
    """The card's metrics.fine_tune: whether the last blocks were fine-tuned, and why."""

    def summary(self) -> list[str]:
        images = self.candidate["images"]
        current = f"; current model {self.current['accuracy']:.1%} on the same images" if self.current else ""
        scored = (  # the set's hash names which images: of none it would be the hash of nothing
            f"accuracy {self.candidate['accuracy']:.1%} on {images} validation images "
            f"(set {self.evaluated_on.get('set', '?')}){current}"
            if images
            else "no validation images to score it on"
        )
        lines = [
            f"candidate {self.version}: {scored}",
            self.decision.reason,
            self.decision.sentence(),
        ]
        if self.fine_tune:
            chosen = "chosen" if self.fine_tune.get("chosen") else "not chosen"
            lines.append(f"fine-tuning the last blocks: {chosen}: {self.fine_tune.get('reason')}")
        if self.curve is not None:
            lines.append(self.curve.sentence())
        lines += self.dataset_notes
        if self.timings_s:
            lines.append(
                f"embedded {self.embedded} new images, reused {self.reused} cached; "
                + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings_s.items())
                + f"; memory peak {self.memory_peak_mb:.0f} MB"
            )
        lines.append(f"report: {self.report_dir}" + (f"; package: {self.package}" if self.package else ""))
        return lines


def run_retrain(
    manifest_path: Path,
    out_dir: Path,
    current_dir: Path | None,
    cache_dir: Path,
    rules: GateRules = DEFAULT_RULES,
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
    version = unused_version(
        next_version(parent.card if parent else None, manifest.labels, parent_labels(parent)), out_dir
    )
    predictions = PredictionCache(cache_dir)
    evaluations: list[Evaluation] = []

    def measure(loaded: Callable[[str], LoadedModel], answers: dict[str, HeadAnswers] | None) -> dict[str, Any]:
        """The staged candidate's evaluation and int8 check, before its card."""
        if on_stage is not None:
            on_stage("evaluating")
        started = time.perf_counter()
        known = answers or {}
        evaluations.append(evaluate(manifest, loaded("fp32"), parent, rules, predictions, known.get("fp32")))
        int8 = int8_agreement(manifest, evaluations[-1], loaded("int8"), known.get("int8"))
        metrics = {**evaluations[-1].card_metrics(), **int8}
        evaluating.append(time.perf_counter() - started)
        return metrics

    evaluating: list[float] = []
    result = retrain(manifest, out_dir / ".work", cache, parent, model_name, settings, on_stage, version, measure)
    result.timings_s["export"] -= evaluating[-1]  # the packager ran the evaluation: count it on its own
    result.timings_s["evaluate"] = evaluating[-1]
    return publish(manifest, result.package_dir, result.card, evaluations[-1], out_dir, parent, result)


def int8_agreement(
    manifest: Manifest, evaluation: Evaluation, int8: LoadedModel, answers: HeadAnswers | None = None
) -> dict[str, Any]:
    """How often the candidate's int8 graph (its head stitched on the shared int8 backbone, or on its
    own quantized backbone when its last block was fine-tuned) gives its fp32 graph's top-1 (the
    evaluation's) on the first :data:`INT8_CHECKED` validation images, run as written (as a Pi runs
    it). ``answers``: a frozen candidate's int8 answers from its head on the int8 backbone's cached
    features; ``int8`` runs only on the images they are unsure of."""
    paths = [Path(e.path) for e in manifest.holdout()[:INT8_CHECKED]]
    if not paths:
        return {}
    found = answers.resolve(int8, paths) if answers is not None else int8.top1([p.read_bytes() for p in paths])
    same = [a == b for a, b in zip(evaluation.candidate_top1[: len(paths)], found, strict=True)]
    return {"int8_top1_agreement_on_validation": round(sum(same) / len(same), 4), "int8_validation_images": len(same)}


def parent_labels(parent: ModelPackage | None) -> list[str] | None:
    return parent.labels if parent else None


def memory_peak_mb() -> float:
    """This process's peak resident memory (the retrain's bound: it must not grow with the
    current model's class count, README "The gate")."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_sagemaker_retrain(
    runner: SageMakerRetrain,
    manifest_path: Path,
    out_dir: Path,
    current_dir: Path | None,
    epochs: int,
    seed: int,
    rules: GateRules = DEFAULT_RULES,
    report: Callable[[str], None] = log.info,
    fine_tune: str = "auto",
) -> RetrainReport:
    """Train a candidate on SageMaker, then version, evaluate, gate and publish it here, as a local
    retrain does. TrainingError when the job fails (its failure reason), or its package does not verify."""
    manifest = read_manifest(manifest_path)
    job = runner.wait(runner.start(manifest, epochs, seed, fine_tune), report=report)
    out_dir.mkdir(parents=True, exist_ok=True)
    candidate = runner.fetch(job, Path(tempfile.mkdtemp(prefix=".sagemaker-", dir=out_dir)))
    return gate_fetched(runner.local_holdout(manifest), candidate, out_dir, current_dir, rules)


def gate_fetched(
    manifest: Manifest, candidate: Path, out_dir: Path, current_dir: Path | None, rules: GateRules
) -> RetrainReport:
    """Version, evaluate, gate and publish a package trained elsewhere (the SageMaker job's)."""
    parent = current_package(current_dir)
    evaluation = evaluate(manifest, load_model(candidate, "fp32"), parent, rules, None)
    fetched = load_package(candidate)  # the job does not know the current model: version it here
    version = next_version(parent.card if parent else None, fetched.labels, parent_labels(parent))
    card = finish_fetched_package(
        candidate,
        {
            **fetched.card.model_dump(exclude={"files"}),
            "version": unused_version(version, out_dir),
            "parent_version": parent.card.version if parent else None,
            "metrics": {**fetched.card.metrics, **evaluation.card_metrics()},
        },
    )
    return publish(manifest, candidate, card, evaluation, out_dir, parent)


@dataclass(frozen=True)
class Evaluation:
    """The candidate and the current model scored on the same held-out images, and the gate's verdict."""

    evaluated_on: dict[str, Any]
    candidate: dict[str, Any]
    current: dict[str, Any] | None
    decision: GateDecision
    candidate_top1: list[str]
    """The candidate's fp32 top-1 for each held-out image, in the manifest's holdout order."""

    def card_metrics(self) -> dict[str, Any]:
        """What the candidate's card says of its evaluation (the report says more)."""
        return {
            "accuracy": self.candidate["accuracy"],
            "holdout_images": self.candidate["images"],
            "evaluated_on": self.evaluated_on,
            "per_class": self.candidate["per_class"],
            "current_model_accuracy": self.current["accuracy"] if self.current else None,
            "gate": self.decision.verdict,
            "validated": self.decision.validated,
            "forced": self.decision.forced,
        }


def evaluate(
    manifest: Manifest,
    candidate: LoadedModel,
    parent: ModelPackage | None,
    rules: GateRules,
    predictions: PredictionCache | None,
    answers: HeadAnswers | None = None,
) -> Evaluation:
    """Score the candidate and the current model on the same held-out field images and gate the candidate.

    ``answers``: a local frozen candidate's, from its head on the cached embeddings; ``candidate`` runs
    only on the images they are unsure of, and the prediction cache keeps them as its answers."""
    holdout = manifest.holdout()
    images, truth = [(e.sha256, Path(e.path)) for e in holdout], [e.label for e in holdout]
    evaluated_on = {
        "images": len(images),
        "set": hashlib.sha256("".join(sorted(sha for sha, _ in images)).encode()).hexdigest()[:12],
        "dataset": manifest.sha256,
    }

    def top1(model: ModelPackage | LoadedModel) -> list[str]:
        if predictions is not None:
            return predictions.top1(model, images)
        return as_loaded(model).top1([path.read_bytes() for _, path in images])

    if answers is None:
        candidate_top1 = top1(candidate)
    else:
        candidate_top1 = answers.resolve(candidate, [path for _, path in images])
        if predictions is not None:
            predictions.record(candidate, [sha for sha, _ in images], candidate_top1)
    scored = score(truth, candidate_top1, manifest.labels)
    current, paired = None, None
    if parent and holdout:
        current_top1 = top1(parent)
        current = score(truth, current_top1, manifest.labels)
        paired = paired_outcomes(truth, candidate_top1, current_top1)
    decision = gate(scored, current, rules, manifest.val_percent, paired)
    return Evaluation(evaluated_on, scored, current, decision, candidate_top1)


def publish(
    manifest: Manifest,
    candidate_dir: Path,
    card: ModelCard,
    evaluation: Evaluation,
    out_dir: Path,
    parent: ModelPackage | None,
    trained: TrainResult | None = None,
) -> RetrainReport:
    """Write the report, publish the candidate if the gate (or ``rules.force``) says so, and log the
    verdict. ``trained``: the local training's figures (timings, embeddings, learning curve) for
    the report; a SageMaker candidate has none. The candidate's card is complete already."""
    curve = trained.curve if trained else None
    candidate, current, decision = evaluation.candidate, evaluation.current, evaluation.decision
    report_dir = out_dir / "reports" / card.version
    report_dir.mkdir(parents=True, exist_ok=True)
    confusion_png(candidate, report_dir / "confusion-candidate.png", f"candidate {card.version}")
    if current and parent:
        confusion_png(current, report_dir / "confusion-current.png", f"current {parent.card.version}")
    if curve is not None and curve.fit is not None:
        curve_png(curve, report_dir / "learning-curve.png", f"candidate {card.version}: learning curve")
    package = None
    if decision.publish:
        package = out_dir / card.version
        if package.exists():
            shutil.rmtree(package)
        candidate_dir.rename(package)
    else:
        shutil.rmtree(candidate_dir, ignore_errors=True)
    report = RetrainReport(
        card.version,
        decision,
        candidate,
        current,
        package,
        report_dir,
        evaluation.evaluated_on,
        dataset_notes(manifest, parent.labels if parent else None),
        curve,
        parent_version=card.parent_version,
        memory_peak_mb=memory_peak_mb(),
        fine_tune=card.metrics.get("fine_tune"),
    )
    if trained is not None:
        report.timings_s, report.embedded, report.reused = trained.timings_s, trained.embedded, trained.reused
    write_report(report, manifest)
    append_decision(
        out_dir,
        {
            "time": utc_timestamp(),
            "candidate": card.version,
            "current": parent.card.version if parent else None,
            "dataset": manifest.sha256,
            "evaluated_on": evaluation.evaluated_on,
            "candidate_accuracy": candidate["accuracy"],
            "current_accuracy": current["accuracy"] if current else None,
            "verdict": decision.verdict,
            "published": decision.publish,
            "validated": decision.validated,
            "forced": decision.forced,
            "regressed": list(decision.regressed),
            "reason": decision.reason,
            "sentence": decision.sentence(),
        },
    )
    return report


def unused_version(version: str, out_dir: Path) -> str:
    """``version``, or the next patch number no candidate under ``out_dir`` has taken: two retrains
    from one current model would otherwise share a version, and the second's report would replace
    the first's (a published 2.0.0 shown as rejected)."""
    major, minor, patch = (int(part) for part in version.split("."))
    while (out_dir / "reports" / version).exists() or (out_dir / version).exists():
        patch += 1
        version = f"{major}.{minor}.{patch}"
    return version


def dataset_notes(manifest: Manifest, current_labels: list[str] | None) -> list[str]:
    """What the candidate's classes are against the current model's (the model current now, which
    may not be the one the manifest was built beside), and what the dataset build left out."""
    notes = []
    if current_labels is not None and current_labels != manifest.labels:
        classes = set(manifest.labels)
        dropped = [label for label in current_labels if label not in classes]
        kept = len(current_labels) - len(dropped)
        shown = ", ".join(dropped[:5]) + (" …" if len(dropped) > 5 else "")
        notes.append(
            f"classes: {len(manifest.labels)}, the current model's {kept} of {len(current_labels)} plus "
            f"{len(manifest.labels) - kept} new"
            + (f"; dropped {len(dropped)} with no training images ({shown})" if dropped else "")
        )
    if manifest.untrained_classes:
        notes.append(f"left out, validation images only: {', '.join(manifest.untrained_classes[:10])}")
    if manifest.conflicts:
        notes.append(
            f"{len(manifest.conflicts)} photo(s) left out: identical copies with different labels "
            f"(`fieldlens dataset build` lists them)"
        )
    return notes


def write_report(report: RetrainReport, manifest: Manifest) -> None:
    document = {
        "version": report.version,
        "parent_version": report.parent_version,
        "dataset": manifest.sha256,
        "evaluated_on": report.evaluated_on,
        "published": report.decision.publish,
        "verdict": report.decision.verdict,
        "validated": report.decision.validated,
        "forced": report.decision.forced,
        "reason": report.decision.reason,
        "sentence": report.decision.sentence(),
        "class_changes": [
            {"label": c.label, "support": c.support, "candidate": c.candidate, "current": c.current}
            for c in report.decision.changes
        ],
        "regressed": list(report.decision.regressed),
        "short_of": dict(report.decision.short_of),
        "learning_curve": report.curve.to_json() if report.curve else None,
        "dataset_notes": report.dataset_notes,
        "candidate": report.candidate,
        "current": report.current,
        "timings_s": report.timings_s,
        "memory_peak_mb": round(report.memory_peak_mb, 1),
        "embedded": report.embedded,
        "reused": report.reused,
    }
    atomic_write(report.report_dir / "report.json", json.dumps(document, indent=1).encode())
    atomic_write(report.report_dir / "report.md", ("\n".join(f"- {line}" for line in report.summary()) + "\n").encode())
