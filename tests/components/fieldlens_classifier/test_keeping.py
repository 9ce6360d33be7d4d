"""The keeper on its own: classified frames in, the real field store's pairs (and refusals) out."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fieldlens_classifier.frame import ClassifiedFrame, EventContext, RequestContext
from fieldlens_classifier.keeping import FieldKeeper
from fieldlens_core.camera import Frame
from fieldlens_core.inference.client import InferenceResult
from fieldlens_core.messages import ImageInfo, ModelInfo, Prediction
from fieldlens_fielddata.sampling.config import SamplingConfig
from fieldlens_fielddata.store import FieldStore
from tests.helpers.images import solid_jpeg

RESULT = InferenceResult(
    predictions=[Prediction(label="hen", confidence=0.7), Prediction(label="egg", confidence=0.3)],
    model=ModelInfo(name="coop", version="1.2.0", sha256="ab" * 32),
)


def classified(context: RequestContext | EventContext) -> ClassifiedFrame:
    frame = Frame(solid_jpeg((200, 30, 30)), {"source": "test", "exposure_us": 800})
    return ClassifiedFrame(frame, RESULT, datetime.now(UTC), context)


def sidecar(image: ImageInfo) -> dict[str, Any]:
    assert image.path is not None
    loaded: dict[str, Any] = json.loads(Path(image.path).with_suffix(".json").read_text())
    return loaded


def sampling(**raw: Any) -> SamplingConfig:
    return SamplingConfig.model_validate(raw)


def test_a_requests_frame_is_filed_with_its_request_and_what_the_camera_said(tmp_path: Path) -> None:
    keeper = FieldKeeper(sampling(), FieldStore(tmp_path, "coop-7"))
    image = keeper.keep(classified(RequestContext("r-1", save=True)))
    assert image.kept and image.reason == "request: save" and Path(str(image.path)).read_bytes()[:2] == b"\xff\xd8"
    kept = sidecar(image)
    assert (kept["request_id"], kept["prediction"], kept["confidence"], kept["saved"]) == ("r-1", "hen", 0.7, True)
    assert kept["capture"] == {"source": "test", "exposure_us": 800} and kept["model"]["version"] == "1.2.0"
    assert "event_id" not in kept and "event_role" not in kept


def test_an_events_frame_is_filed_in_its_role_within_the_save_caps(tmp_path: Path) -> None:
    keeper = FieldKeeper(sampling(strategies=[], saveCaps={"perMinute": 1}), FieldStore(tmp_path, "belt-1"))
    assert keeper.keep(classified(EventContext("e-1"))).reason == "policy: no strategy wanted it"  # in view only
    best = keeper.keep(classified(EventContext("e-1", "best", "event best frame")))
    kept = sidecar(best)
    assert (kept["event_id"], kept["event_role"], kept["reason"], kept["saved"]) == (
        "e-1",
        "best",
        "event best frame",
        True,
    )
    assert "request_id" not in kept
    refused = keeper.keep(classified(EventContext("e-1", "boundary", "event end")))
    assert not refused.kept and refused.reason.startswith("save cap: per_minute (1) reached")


def test_a_new_policy_counts_what_the_store_kept_already(tmp_path: Path) -> None:
    caps = sampling(caps={"perMinute": 1})
    store = FieldStore(tmp_path, "coop-7")
    keeper = FieldKeeper(caps, store)
    first = keeper.keep(classified(RequestContext("r-1")))
    assert first.kept
    keeper.reconfigure(caps)  # a live update: the cap has been reached, whoever's policy kept it
    assert keeper.keep(classified(RequestContext("r-2"))).reason == "cap: per_minute (1) reached"
    assert FieldKeeper(caps, store).keep(classified(RequestContext("r-3"))).reason == "cap: per_minute (1) reached"


def test_a_full_store_is_logged_once_for_requests_and_events_alike(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keeper = FieldKeeper(sampling(), FieldStore(tmp_path, "coop-7", max_images=0))
    with caplog.at_level(logging.WARNING, logger="fieldlens_classifier.keeping"):
        image, pending = keeper.reserve(classified(RequestContext("r-1")))
        later = [keeper.keep(classified(EventContext("e-1", "best", "event best frame"))) for _ in range(5)]
    assert pending is None and not image.kept and image.reason is not None and image.reason.startswith("disk cap:")
    assert all(not info.kept and str(info.reason).startswith("disk cap:") for info in later)
    warnings = [r for r in caplog.records if "not keeping image" in r.getMessage()]
    assert len(warnings) == 1 and image.id in warnings[0].getMessage()
    assert list(tmp_path.rglob("*.jpg")) == []
