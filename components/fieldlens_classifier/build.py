"""The classifier's adapters, built from its configuration: the component and the v1 Lambda share them.

The status responder (README, `fieldlens status`) is built here beside the classifier, because it
needs what only this function holds: the inference client's ping. It starts with the classifier
(its ``on_start``) and stops after it, before the inference client closes.
"""

from __future__ import annotations

from collections.abc import Callable

from fieldlens_classifier.config import ClassifierConfig
from fieldlens_classifier.service import Classifier
from fieldlens_classifier.status import StatusResponder
from fieldlens_core.bus import Bus
from fieldlens_core.camera.registry import build_camera
from fieldlens_core.inference.client import InferenceClient
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
    classifier = Classifier(config, bus, camera, inference, store)
    responder = StatusResponder(classifier, bus, inference.ping)
    classifier.on_start.append(responder.start)
    return classifier, [classifier.stop, responder.stop, inference.close, camera.close, store.close]
