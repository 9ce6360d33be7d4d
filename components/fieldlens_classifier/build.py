"""The classifier's adapters, built from its configuration: the component and the v1 Lambda share them.

One keeper (the sampling policy, the store, the "not kept" log) is built here and handed to both
the request path and the continuous loop, so that neither reaches the store through the other.
Continuous-mode commands and the status responder (README, `fieldlens status`) are built beside
the classifier and start with it (its ``on_start``); the responder needs what only this module
holds, the inference client's ping, and stops after the classifier, before that client closes.
"""

from __future__ import annotations

from collections.abc import Callable

from fieldlens_classifier.commands import ContinuousCommands
from fieldlens_classifier.config import ClassifierConfig
from fieldlens_classifier.continuous import ContinuousLoop
from fieldlens_classifier.keeping import FieldKeeper
from fieldlens_classifier.operating_point import OperatingPoints, ServedOperatingPoints, no_operating_point
from fieldlens_classifier.service import Classifier
from fieldlens_classifier.status import StatusResponder
from fieldlens_core import topics
from fieldlens_core.bus import Bus
from fieldlens_core.camera import Camera
from fieldlens_core.camera.registry import build_camera
from fieldlens_core.inference.client import Inference, InferenceClient
from fieldlens_fielddata.store import FieldStore


def build_classifier(config: ClassifierConfig, bus: Bus) -> tuple[Classifier, list[Callable[[], None]]]:
    """The classifier on ``bus``, and what to close on shutdown, in order (it answers what is
    queued first, then status stops, then the inference client, the camera and the store let go)."""
    camera = build_camera(config.camera)
    inference = InferenceClient(config.inference, pool_size=config.workers)
    store = FieldStore(
        config.field_data_dir,
        config.thing_name,
        config.s3_prefix,
        config.sync_interval_s,
        max_bytes=config.max_field_bytes,
        max_images=config.max_field_images,
    )
    classifier = assemble_classifier(config, bus, camera, inference, store, ServedOperatingPoints(inference.ping))
    responder = StatusResponder(classifier, bus, inference.ping)
    classifier.on_start.append(responder.start)
    return classifier, [classifier.stop, responder.stop, inference.close, camera.close, store.close]


def assemble_classifier(
    config: ClassifierConfig,
    bus: Bus,
    camera: Camera,
    inference: Inference,
    store: FieldStore,
    operating_points: OperatingPoints = no_operating_point,
) -> Classifier:
    """The classifier and its continuous mode on these adapters (the component's, or a test's):
    one keeper for both, the loop handed to the classifier that runs it, its commands beside.
    ``operating_points``: the served model's (the inference service's ping says them)."""
    keeper = FieldKeeper(config.sampling, store, operating_points)
    loop = ContinuousLoop(
        config.continuous,
        config.thing_name,
        camera,
        inference,
        keeper,
        bus.publish,
        topics.event_topic(config.name),
        topics.frame_topic(config.name),
        operating_points=operating_points,
    )
    classifier = Classifier(config, bus, camera, inference, keeper, loop)
    classifier.on_start.append(ContinuousCommands(classifier, bus).start)
    return classifier
