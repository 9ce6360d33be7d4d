"""The retrain half of `fieldlens bench`: time to retrain, and what retraining buys, on real photos.

- cold: 1,000 labelled field photos (Fashion-MNIST under field conditions), empty embedding
  cache, a model with a new label set from the ImageNet backbone: embed, train, export
  (fp32 + int8), evaluate;
- warm: the same plus 50 new photos, against the first model: only the 50 are embedded;
  cold and warm ``--repeat`` times, each from an empty cache, min / median / max;
- the demo scenario: a base model trained on studio photos, then retrained with 400
  labelled field photos; both scored on 300 other field photos.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fieldlens_cli.bench_edge import spread
from fieldlens_cli.output import emit
from fieldlens_retrain.dataset import build_manifest, write_manifest
from fieldlens_retrain.evaluate import predict_files, score
from fieldlens_retrain.gate import GateRules
from fieldlens_retrain.pipeline import RetrainReport, run_retrain
from fieldlens_samples import fashion


def _timed_retrain(work: Path, folder: Path, current: Path | None, name: str) -> tuple[RetrainReport, float]:
    manifest = build_manifest(None, {}, folder, None)
    manifest.entries = [e.model_copy(update={"source": "field"}) for e in manifest.entries]
    manifest.sha256 = manifest.digest()
    write_manifest(manifest, work / f"{name}.json")
    started = time.perf_counter()
    report = run_retrain(work / f"{name}.json", work / "models", current, work / "cache", rules=GateRules(force=True))
    return report, time.perf_counter() - started


def _as_class_folders(folder: Path, truth: dict[str, str], into: Path) -> Path:
    for name, label in truth.items():
        (into / label).mkdir(parents=True, exist_ok=True)
        (into / label / name).write_bytes((folder / name).read_bytes())
    return into


def run(args: argparse.Namespace) -> dict[str, Any]:
    emit("\nretrain: Fashion-MNIST photos under field conditions (Debian's dataset-fashion-mnist)")
    rng = np.random.default_rng(7)
    train_images, train_labels = fashion.load("train")
    test_images, test_labels = fashion.load("t10k")
    first = fashion.pick(test_labels, 100, rng)
    extra = fashion.pick(test_labels, 5, rng, exclude=set(first))
    colds, warms = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="fl-retrain-bench-") as scratch:  # an empty cache each time
            work = Path(scratch)
            truth = fashion.write_field(work / "photos", test_images, test_labels, first, seed=11)
            folder = _as_class_folders(work / "photos", truth, work / "labelled")
            cold, cold_s = _timed_retrain(work, folder, None, "cold")
            more = fashion.write_field(work / "photos", test_images, test_labels, extra, seed=12)
            _as_class_folders(work / "photos", more, folder)
            warm, warm_s = _timed_retrain(work, folder, cold.package, "warm")
            colds.append({"seconds": cold_s, "embedded": cold.embedded, **cold.timings_s})
            warms.append({"seconds": warm_s, "embedded": warm.embedded, **warm.timings_s})
            emit(f"  retrain run {len(colds)}: cold {cold_s:.1f} s, {len(more)} new images {warm_s:.1f} s")
    results: dict[str, Any] = {
        "cold": {"images": len(truth), **_spreads(colds)},
        "warm": {"new_images": len(more), **_spreads(warms)},
        "repeats": args.repeat,
    }
    with tempfile.TemporaryDirectory(prefix="fl-retrain-bench-") as scratch:
        work = Path(scratch)

        # the demo scenario: studio-trained base model, then retrained with labelled field photos
        scenario = work / "scenario"
        fashion.write_studio(scenario / "base", train_images, train_labels, fashion.pick(train_labels, 50, rng))
        camera = fashion.pick(test_labels, 40, rng)
        holdout = fashion.pick(test_labels, 30, rng, exclude=set(camera))
        camera_truth = fashion.write_field(scenario / "camera", test_images, test_labels, camera, seed=1)
        holdout_truth = fashion.write_field(scenario / "holdout", test_images, test_labels, holdout, seed=2)
        base_manifest = build_manifest(None, {}, scenario / "base", None)
        write_manifest(base_manifest, scenario / "base.json")
        base = run_retrain(
            scenario / "base.json", scenario / "models", None, work / "cache", rules=GateRules(force=True)
        )
        _as_class_folders(scenario / "camera", camera_truth, scenario / "base")  # base + labelled field photos
        both = build_manifest(None, {}, scenario / "base", base_manifest.labels)
        write_manifest(both, scenario / "both.json")
        retrained = run_retrain(
            scenario / "both.json", scenario / "models", base.package, work / "cache", rules=GateRules(force=True)
        )
        paths = sorted((scenario / "holdout").iterdir())
        labels = [holdout_truth[p.name] for p in paths]
        before = score(labels, predict_files(base.package or Path(), paths), base_manifest.labels)["accuracy"]
        after = score(labels, predict_files(retrained.package or Path(), paths), base_manifest.labels)["accuracy"]
        results["scenario"] = {
            "holdout_images": len(paths),
            "field_images": len(camera_truth),
            "before": before,
            "after": after,
        }
    return results


def _spreads(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {key: spread([run[key] for run in runs]) for key in runs[0]}


def report(r: dict[str, Any]) -> None:
    cold, warm, scenario = r["cold"], r["warm"], r["scenario"]

    def three(figures: dict[str, float]) -> str:
        return f"{figures['median']:.1f} s ({figures['min']:.1f}-{figures['max']:.1f})"

    def stages(run: dict[str, Any]) -> str:
        """Each stage's median; evaluation (the gate's predictions and plots) is the rest."""
        named = ("embed", "train", "export")
        rest = run["seconds"]["median"] - sum(run[k]["median"] for k in named)
        return ", ".join(f"{k} {run[k]['median']:.1f}" for k in named) + f", evaluate {max(rest, 0.0):.1f}"

    emit("")
    emit(f"| measure: median (min-max) over {r['repeats']} runs | result | target |")
    emit("| --- | --- | --- |")
    emit(
        f"| retrain, {cold['images']} labelled field images, cold cache | {three(cold['seconds'])} "
        f"({stages(cold)}) | <= 45 s |"
    )
    emit(
        f"| retrain with {warm['new_images']} new images (embedded: {warm['embedded']['median']:.0f}) | "
        f"{three(warm['seconds'])} ({stages(warm)}) | <= 8 s |"
    )
    emit(
        f"| accuracy on {scenario['holdout_images']} held-out field images, base model -> retrained with "
        f"{scenario['field_images']} field images | {scenario['before']:.1%} -> {scenario['after']:.1%} "
        f"({100 * (scenario['after'] - scenario['before']):+.1f} points) | >= +20 points |"
    )
