"""`fieldlens demo --loop`: the whole retrain loop on embedded defaults, with real labelled photos.

1. A base model: the default backbone retrained into Fashion-MNIST's 10 product classes on
   studio photos (Debian's dataset-fashion-mnist), installed as version 1.0.0.
2. The device serves it (embedded broker, the real component processes); its camera shows
   other photos of the dataset under field conditions, and classify requests collect them.
3. Labelling every kept image through the labelling page's HTTP API: the dataset's ground truth
   stands in for the person at the keyboard (the demo says so).
4. Dataset manifest, retrain, evaluation against the current model, the gate.
5. `model install`: the running inference service reloads; held-out field photos are
   classified through it before and after.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from fieldlens_cli.output import emit
from fieldlens_cli.stack import local_stack
from fieldlens_cli.supervisor import ServeOptions, UploadOptions
from fieldlens_core import topics
from fieldlens_core.config import InferenceClientConfig, private_socket
from fieldlens_core.errors import TrainingError
from fieldlens_core.inference.client import InferenceClient
from fieldlens_core.model_install import install_package
from fieldlens_core.model_package import load_package
from fieldlens_fielddata.directory import FieldDataDir
from fieldlens_fielddata.sidecar import Sidecar
from fieldlens_labelling.client import PageClient
from fieldlens_labelling.serve import LabelServer, PageOptions
from fieldlens_retrain.dataset import balance_report, build_manifest, write_manifest
from fieldlens_retrain.evaluate import score
from fieldlens_retrain.gate import GateRules, class_changes, describe_changes
from fieldlens_retrain.pipeline import run_retrain
from fieldlens_retrain.train import TrainSettings
from fieldlens_samples.scenario import write_scenario

log = logging.getLogger(__name__)

SERVICE = "fashion"
BASE_PER_CLASS, CAMERA_PER_CLASS, HOLDOUT_PER_CLASS = 50, 40, 30


FROZEN = TrainSettings(fine_tune="never")
"""The demo's retrains train on the frozen backbone: about a minute in all on 2 cores, where the
default (fine-tuning when the training images say it helps) took 13 minutes beside other work
(`fieldlens retrain --fine-tune auto`; its cost: field_data/README.md, "Past the frozen features")."""


def scores_through_service(
    client: InferenceClient, folder: Path, truth: dict[str, str], labels: list[str]
) -> tuple[dict[str, Any], str]:
    """Classify every held-out photo with the running inference service; (its scores, model version)."""
    guesses, version = [], ""
    for name in sorted(truth):
        result = client.classify((folder / name).read_bytes(), top_k=1)
        guesses.append(result.predictions[0].label)
        version = result.model.version
    return score([truth[name] for name in sorted(truth)], guesses, labels), version


def wait_for_version(client: InferenceClient, version: str, timeout_s: float = 60) -> None:
    deadline, pause = time.monotonic() + timeout_s, threading.Event()
    while client.ping()["model"]["version"] != version:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the inference service did not load {version} within {timeout_s}s")
        pause.wait(0.2)


def label_through_the_page(work: Path, camera_truth: dict[str, str]) -> int:
    """What a person does on the page, scripted: every kept image, in the page's order, gets its true label."""
    truth = {
        pair.image_id: camera_truth[str(sidecar.capture["file"])]
        for pair, sidecar in FieldDataDir(work / "field-images").read_all()
        if isinstance(sidecar, Sidecar)
    }
    options = PageOptions(
        field_data=work / "field-images",
        model_dir=work / "model",
        cache_dir=work / "cache",
        port=0,
        labeller="loop-demo",
    )
    with LabelServer(options) as page:
        client = PageClient(page.base_url, page.token)
        items = list(client.items("useful"))
        for item in items:
            client.label([item], truth[item["id"]])
    return len(items)


def run_loop_demo(data_dir: Path, port: int | None) -> int:
    started = time.perf_counter()
    work = data_dir.absolute() / "loop"
    shutil.rmtree(work, ignore_errors=True)
    rng = np.random.default_rng(0)
    emit("fieldlens retrain loop demo (Fashion-MNIST photos from Debian's dataset-fashion-mnist)\n")

    scenario = write_scenario(work, rng, BASE_PER_CLASS, CAMERA_PER_CLASS, HOLDOUT_PER_CLASS)
    camera_truth, holdout_truth = scenario.camera_truth, scenario.holdout_truth
    emit(
        f"1. data: {BASE_PER_CLASS * 10} studio photos (base), {len(camera_truth)} field photos for the camera, "
        f"{len(holdout_truth)} more held out for the before/after table"
    )

    base_manifest = build_manifest(None, {}, work / "base", None)
    write_manifest(base_manifest, work / "base.json")
    base = run_retrain(
        work / "base.json", work / "models", None, work / "cache", GateRules(force=True), FROZEN, name="fashion"
    )
    if base.package is None:
        raise TrainingError(f"the base model was not written: {base.decision.reason}")
    install_package(base.package, work / "model")
    emit(
        f"2. base model {base.version} trained on studio photos in {sum(base.timings_s.values()):.0f}s and "
        f"installed (accuracy on studio photos: {base.candidate['accuracy']:.1%})"
    )

    socket_path = private_socket(f"loop-{os.getpid()}")

    def options(url: str) -> ServeOptions:
        return ServeOptions(
            broker=url,
            name=topics.DEFAULT_NAME,
            camera=f"folder:{work / 'camera'}",
            field_data=work / "field-images",
            model_dir=work / "model",
            socket_path=socket_path,
            service_name=SERVICE,
            thing_name="loop-demo",
            log_level="WARNING",
            upload=UploadOptions(local_bucket_dir=work / "bucket"),
        )

    with local_stack(options, "loop-demo", port) as stack:
        client = InferenceClient(InferenceClientConfig(service_name=SERVICE, socket_path=socket_path, timeout_s=30))
        try:
            classes = base_manifest.labels
            before_scores, before_version = scores_through_service(client, work / "holdout", holdout_truth, classes)
            before = before_scores["accuracy"]
            requester = stack.requester()
            kept = sum(
                1 for _ in camera_truth if (requester.request(b'{"top_k": 3}', 30) or {}).get("image", {}).get("kept")
            )
            emit(
                f"3. the device classified {len(camera_truth)} field photos over MQTT and kept {kept} "
                f"(field accuracy of {before_version}: {before:.1%} on the held-out photos)"
            )

            labelled = label_through_the_page(work, camera_truth)
            emit(
                f"4. labelled {labelled} kept images through the labelling page's HTTP API (`fieldlens label "
                "serve`): the dataset's ground truth stands in for the person at the keyboard"
            )

            current_labels = load_package(work / "model").labels
            manifest = build_manifest(work / "field-images", {}, work / "base", current_labels)
            write_manifest(manifest, work / "dataset.json")
            emit("5. dataset manifest:\n   " + "\n   ".join(balance_report(manifest)[-1:]))
            report = run_retrain(
                work / "dataset.json", work / "models", work / "model", work / "cache", settings=FROZEN
            )
            emit("6. retrain:\n   " + "\n   ".join(report.summary()))
            if report.package is None:
                emit("   the gate kept the current model")
                return 1
            install_package(report.package, work / "model")
            wait_for_version(client, report.version)
            after_scores, after_version = scores_through_service(client, work / "holdout", holdout_truth, classes)
            after = after_scores["accuracy"]
            emit(f"7. installed {report.version}; the running inference service reloaded it with no restart\n")
            emit(f"| model | accuracy on {len(holdout_truth)} held-out field photos |")
            emit("| --- | --- |")
            emit(f"| {before_version} (studio photos only) | {before:.1%} |")
            emit(f"| {after_version} (+ {labelled} labelled field photos) | {after:.1%} |")
            took = time.perf_counter() - started
            emit(f"\nchange: {100 * (after - before):+.1f} points; the whole loop took {took:.0f}s")
            emit(
                f"on these {len(holdout_truth)} held-out photos (not the gate's validation images): "
                + describe_changes(class_changes(after_scores, before_scores))
            )
            emit(f"confusion matrices and the gate's report: {report.report_dir}")
        finally:
            client.close()
    return 0
