"""`fieldlens bench --only label-order`: how many labels the page's order saves, measured by retraining.

The loop demo's set-up on Fashion-MNIST: a base model trained on studio photos; a device keeps
600 field photos with that model's predictions (classified by LoadedModel, as the service
does). A scripted labeller answers with the ground truth through the labelling page's own HTTP
API, taking the page's next images in its default order (``useful``: TypiClust's typical images
first while labels are few, a random tenth, near-duplicates labelled as one stack; the page embeds
the pool first, into the cache the retrains read) and in its ``uncertain`` order, and in random
orders; after each step the model is retrained (base photos + the field
labels so far) and scored on 300 other field photos. Two yardsticks no page could have: a
class-balanced order that knows every image's true class (the best class coverage an order can
give), and every pool image labelled (the ceiling). The figure goes to
``<data dir>/bench/label-order.png`` (matplotlib).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

import numpy as np

from fieldlens_bench.common import Result
from fieldlens_bench.runner import BenchOptions
from fieldlens_cli.output import emit
from fieldlens_core.model import load_model
from fieldlens_core.model_install import install_package
from fieldlens_fielddata.directory import new_image_id
from fieldlens_fielddata.sidecar import ModelRef, Observation
from fieldlens_fielddata.store import FieldStore
from fieldlens_labelling.client import PageClient
from fieldlens_labelling.serve import LabelServer, PageOptions
from fieldlens_retrain.dataset import build_manifest, write_manifest
from fieldlens_retrain.evaluate import predict_files, score
from fieldlens_retrain.gate import GateRules
from fieldlens_retrain.pipeline import run_retrain
from fieldlens_samples.scenario import write_scenario

STEPS = (25, 50, 100, 150, 200)
RANDOM_SEEDS = (1, 2)
BASE_PER_CLASS, POOL_PER_CLASS, HOLDOUT_PER_CLASS = 30, 60, 30


@dataclass(frozen=True)
class LabelOrderResult(Result):
    """Accuracy on the held-out photos after each step of labels, for each order."""

    steps: list[int]
    useful: list[float]
    uncertain: list[float]
    random: list[list[float]]
    """One curve per seed of :data:`RANDOM_SEEDS`."""
    random_mean: list[float]
    balanced: list[float]
    ceiling: float
    """Every pool image labelled."""
    pool: int


def keep_pool(work: Path, pool: Path, truth: dict[str, str]) -> dict[str, str]:
    """The device's part: classify each pool photo with the base model and keep it; image id -> truth."""
    model = load_model(work / "model", "fp32")
    store = FieldStore(work / "field", "bench", sync_interval_s=30)
    by_id = {}
    start = datetime(2026, 11, 24, tzinfo=UTC)
    for n, name in enumerate(sorted(truth)):
        jpeg = (pool / name).read_bytes()
        ranked = model.classify(jpeg, 10, "image/jpeg").predictions
        seen = Observation(
            prediction=ranked[0].label,
            confidence=ranked[0].confidence,
            predictions=ranked,
            model=ModelRef(**model.info),
            capture={"file": name},
            reason="bench",
        )
        when = start + timedelta(seconds=n)
        image_id = new_image_id(when)
        store.keep(image_id, when, jpeg, seen)
        by_id[image_id] = truth[name]
    store.close()
    return by_id


def curve(
    work: Path,
    name: str,
    order: str | list[str],
    truth: dict[str, str],
    holdout: dict[str, str],
    steps: tuple[int, ...] = STEPS,
) -> list[float]:
    """Accuracy after each step of labelling in ``order``: one of the page's orders, asked for its
    next images at every step (as a person would see them), or a list of image ids."""
    field = work / f"field-{name}"
    shutil.copytree(work / "field", field)
    labels = sorted(set(truth.values()))
    paths = [work / "holdout" / photo for photo in sorted(holdout)]
    accuracies = []
    # the page's cache is the retrain's: the page embeds the pool once (for its typical phase and
    # stacks) into the cache the retrains read, as `label serve` and its Retrain share `--cache`
    options = PageOptions(field_data=field, model_dir=work / "model", cache_dir=work / "cache", port=0)
    with LabelServer(options) as page:
        client = PageClient(page.base_url, page.token)
        page.index.loaded.wait()
        page.embeddings.wait_idle()  # every pool image embedded: the order does not depend on timing
        done = 0
        for step in steps:
            if isinstance(order, str):
                batch = list(islice(client.items(order), step - done))
            else:
                items = {item["id"]: item for item in client.items("newest", show="all")}  # no stacks
                batch = [items[image_id] for image_id in order[done:step]]
            for item in batch:  # with its stack of near-duplicates, as the page labels it: one label for all
                client.label([item, *item.get("stack", [])], truth[item["id"]])
            done = step
            manifest = build_manifest(field, {}, work / "base", labels)
            write_manifest(manifest, work / f"{name}-{step}.json")
            report = run_retrain(
                work / f"{name}-{step}.json", work / f"models-{name}", None, work / "cache", rules=GateRules(force=True)
            )
            if report.package is None:
                raise RuntimeError(f"no package for {name} at {step}: {report.decision.reason}")
            predicted = predict_files(report.package, paths)
            accuracies.append(score([holdout[p.name] for p in paths], predicted, labels)["accuracy"])
            emit(f"  {name}: {step} labels -> {accuracies[-1]:.1%}")
    return accuracies


def balanced(truth: dict[str, str], seed: int) -> list[str]:
    """Every class in turn, by the true labels: the best class coverage any order could give."""
    shuffled = sorted(truth)
    np.random.default_rng(seed).shuffle(shuffled)
    by_class: dict[str, list[str]] = {}
    for image_id in shuffled:
        by_class.setdefault(truth[image_id], []).append(image_id)
    queues = list(by_class.values())
    return [q[n] for n in range(max(map(len, queues))) for q in queues if n < len(q)]


def run(options: BenchOptions) -> LabelOrderResult:
    emit("\nlabels saved by the order: Fashion-MNIST field photos, labelled through the page's HTTP API")
    rng = np.random.default_rng(3)
    with tempfile.TemporaryDirectory(prefix="fl-label-order-") as scratch:
        work = Path(scratch)
        scenario = write_scenario(work, rng, BASE_PER_CLASS, POOL_PER_CLASS, HOLDOUT_PER_CLASS)
        write_manifest(build_manifest(None, {}, scenario.base, None), work / "base.json")
        base = run_retrain(
            work / "base.json", work / "models-base", None, work / "cache", rules=GateRules(force=True), name="fashion"
        )
        if base.package is None:
            raise RuntimeError(f"the base model was not written: {base.decision.reason}")
        install_package(base.package, work / "model")
        truth = keep_pool(work, scenario.camera, scenario.camera_truth)  # the camera's photos are the pool
        holdout = scenario.holdout_truth
        useful = curve(work, "useful", "useful", truth, holdout)
        uncertain = curve(work, "uncertain", "uncertain", truth, holdout)
        randoms = []
        for seed in RANDOM_SEEDS:
            shuffled = sorted(truth)
            np.random.default_rng(seed).shuffle(shuffled)
            randoms.append(curve(work, f"random-{seed}", shuffled, truth, holdout))
        by_class = curve(work, "balanced", balanced(truth, 1), truth, holdout)
        ceiling = curve(work, "every", sorted(truth), truth, holdout, steps=(len(truth),))[0]
    result = LabelOrderResult(
        steps=list(STEPS),
        useful=useful,
        uncertain=uncertain,
        random=randoms,
        random_mean=[statistics.mean(values) for values in zip(*randoms, strict=True)],
        balanced=by_class,
        ceiling=ceiling,
        pool=len(truth),
    )
    plot(result, options.data_dir / "bench" / "label-order.png")
    return result


def plot(result: LabelOrderResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(9.0, 4.0))
    try:
        axes.plot(result.steps, result.useful, "o-", label="the page's default order (useful)")
        axes.plot(result.steps, result.uncertain, "^-", label="the page's uncertain order")
        axes.plot(result.steps, result.balanced, "d-.", color="tab:green", label="class-balanced (knows the truth)")
        for n, values in enumerate(result.random):
            axes.plot(result.steps, values, ":", color="grey", alpha=0.7, label="random order" if n == 0 else None)
        axes.plot(result.steps, result.random_mean, "s--", color="black", label="random order, mean")
        axes.axhline(result.ceiling, color="tab:red", alpha=0.6, label=f"all {result.pool} field images labelled")
        axes.set_xlabel("field images labelled")
        axes.set_ylabel("accuracy on 300 held-out field photos")
        axes.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")  # beside: the curves cross
        figure.tight_layout()
        figure.savefig(path, dpi=110)
    finally:
        plt.close(figure)
    emit(f"figure: {path}")


def report(r: LabelOrderResult) -> None:
    emit("")
    emit(f"| labels | useful (default) | uncertain | random (mean of {len(r.random)}) | class-balanced (oracle) |")
    emit("| --- | --- | --- | --- | --- |")
    rows = zip(r.steps, r.useful, r.uncertain, r.random_mean, r.balanced, strict=True)
    for step, *values in rows:
        emit(f"| {step} | " + " | ".join(f"{v:.1%}" for v in values) + " |")
    emit(f"| {r.pool} (every one) | {r.ceiling:.1%} | | | |")
    at_200 = r.random_mean[-1]
    reached = next((s for s, u in zip(r.steps, r.useful, strict=True) if u >= at_200), None)
    emit(f"\nrandom order at 200 labels: {at_200:.1%}; the page's order reaches it at {reached or 'more than 200'}")
