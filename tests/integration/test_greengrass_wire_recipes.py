"""The recipes run as written, on what `fieldlens build` produced, under the test nucleus.

The four components are deployed to a test core (:mod:`tests.helpers.nucleus.core`): each
recipe's Install builds its venv from the artifact's pinned requirements, the Model's Startup
checks the package, the InferenceService and the Classifier start from their Run steps with the
recipe variables the nucleus puts in, and every component talks to the nucleus through the real
awsiotsdk client. A classify request then arrives as an IoT Core message and the prediction
leaves through PublishToIoTCore; configuration changes go through the nucleus's validation;
stopping the run stops the component.

The core's root persists between sessions, as a device's does (see ``persistent_root``): the
Install steps run every time, and only the first session on a machine downloads the wheels
(from the package registry, about a minute); later ones take a few seconds each.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.images import solid_jpeg
from tests.helpers.nucleus.core import GreengrassCore, State, live_members, persistent_root
from tests.helpers.nucleus.deployment import READY, built_artifacts
from tests.helpers.nucleus.nucleus import MqttMessage
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.slow

CACHE = (
    Path(os.environ.get("FIELDLENS_TEST_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"))
    / "fieldlens-tests"
    / f"greengrass-py{sys.version_info.major}.{sys.version_info.minor}"
)
"""Outside the clone, like every cache of the tests: a fresh clone finds the venvs a previous one built."""

CLASSIFY, PREDICTION = "/request/classify/beverage_container", "/response/prediction/beverage_container"
STATUS, STATUS_ANSWER = "/request/status/beverage_container", "/response/status/beverage_container"
_ids = count()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_artifacts(tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="module")
def device(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GreengrassCore]:
    data = tmp_path_factory.mktemp("device")
    (data / "photos").mkdir()
    (data / "photos" / "red.jpg").write_bytes(solid_jpeg((240, 10, 10)))
    merges: dict[str, dict[str, Any]] = {
        "fieldlens.Classifier": {
            "camera": {"source": "folder", "folder": str(data / "photos")},  # no camera here: a folder of one
            "fieldDataDir": str(data / "field-images"),
        },
        "fieldlens.Uploader": {
            "fieldDataDir": str(data / "field-images"),
            "bucket": None,  # the stand-in directory instead of S3 (no credentials here)
            "localBucketDir": str(data / "bucket"),
            "statusIntervalS": 1.0,
            "pollIntervalS": 0.5,
        },
    }
    with persistent_root(CACHE) as root, GreengrassCore(root, thing_name="coop-7") as core:
        core.deploy(built, ["fieldlens.Classifier", "fieldlens.Uploader"], merges)
        for name, line in READY.items():
            core.wait_for_log(name, line, timeout_s=900)  # the recipes' Install timeout; a cold pip takes ~1 min
        yield core


def ask(device: GreengrassCore, topic: str, answer_topic: str, **request: Any) -> dict[str, Any]:
    """One request from the cloud, and its answer (matched by request_id)."""
    request_id = f"wire-{next(_ids)}"
    device.nucleus.iot_core.send(topic, json.dumps({"request_id": request_id, **request}).encode())
    answer = device.nucleus.iot_core.wait_for(answer_topic, lambda m: json.loads(m.payload)["request_id"] == request_id)
    body: dict[str, Any] = json.loads(answer.payload)
    return body


def test_the_components_started_through_their_recipes_lifecycles(device: GreengrassCore) -> None:
    assert device.components["fieldlens.Model"].history == [State.INSTALLED, State.STARTING, State.RUNNING]
    model_check = device.log("fieldlens.Model")
    assert "fieldlens_core.model_check" in model_check and "/fieldlens-model" in model_check
    for name in READY:
        assert device.components[name].state == State.RUNNING
        assert device.nucleus.server.connected(name) or name == "fieldlens.InferenceService"
    inference = device.log("fieldlens.InferenceService")
    assert f"--socket {device.work_path('fieldlens.InferenceService')}/inference.sock" in inference
    assert "--model-dir " + str(device.decompressed_path("fieldlens.Model", "1.0.0") / "fieldlens-model") in inference
    classifier = device.log("fieldlens.Classifier")
    assert f"--thing-name coop-7 --socket {device.work_path('fieldlens.InferenceService')}/inference.sock" in classifier


def test_a_request_from_iot_core_is_answered_through_publish_to_iot_core(device: GreengrassCore) -> None:
    request = json.dumps({"request_id": "console-1", "top_k": 1}).encode()
    assert device.nucleus.iot_core.send(CLASSIFY, request, correlation_data=b"corr-1") == 1
    answer = device.nucleus.iot_core.wait_for(PREDICTION, lambda m: json.loads(m.payload)["request_id"] == "console-1")
    body = json.loads(answer.payload)
    assert body["thing"] == "coop-7" and [p["label"] for p in body["predictions"]] == ["red"]
    assert (answer.source, answer.qos, answer.correlation_data) == ("fieldlens.Classifier", "1", b"corr-1")
    assert body["image"]["kept"] and body["image"]["s3_key"].startswith("field-data/coop-7/")


def test_the_kept_image_is_uploaded_and_the_uploaders_figures_reach_the_classifiers_status(
    device: GreengrassCore,
) -> None:
    def relayed() -> bool:
        uploads = ask(device, STATUS, STATUS_ANSWER).get("uploads")
        return uploads is not None and uploads["uploaded"] >= 1

    wait_until(relayed, 60, "an upload in the status the classifier relays")
    status = device.nucleus.iot_core.wait_for("/status/field-data/coop-7")
    assert status.source == "fieldlens.Uploader"


def test_a_configuration_change_is_validated_then_applied(device: GreengrassCore) -> None:
    assert len(ask(device, CLASSIFY, PREDICTION)["predictions"]) == 3  # defaultTopK 5, three labels
    result = device.deploy_configuration("fieldlens.Classifier", {"defaultTopK": 2})
    assert result.status == "SUCCEEDED"
    assert result.report is not None and result.report.status == "ACCEPTED"
    wait_until(lambda: len(ask(device, CLASSIFY, PREDICTION)["predictions"]) == 2, 30, "the new defaultTopK applied")


def test_an_invalid_configuration_is_rejected_with_its_reason(device: GreengrassCore) -> None:
    result = device.deploy_configuration("fieldlens.Classifier", {"defaultTopK": 0, "camera": {"widht": 640}})
    assert result.status == "FAILED_NO_STATE_CHANGE"
    assert result.report is not None and result.report.status == "REJECTED"
    assert "widht" in result.message and "default_top_k" in result.message, result.message
    assert "widht" not in device.nucleus.configuration("fieldlens.Classifier")["camera"]
    assert len(ask(device, CLASSIFY, PREDICTION)["predictions"]) == 2  # still running on the accepted one


def test_the_inference_service_validates_its_configuration_over_ipc_too(device: GreengrassCore) -> None:
    result = device.deploy_configuration("fieldlens.InferenceService", {"modelVariant": "fp16"})
    assert result.report is not None and result.report.status == "REJECTED"
    assert "model_variant: Input should be 'auto', 'fp32' or 'int8'" in result.message, result.message


def test_a_retained_request_is_not_run(device: GreengrassCore) -> None:
    device.nucleus.iot_core.publish(MqttMessage(CLASSIFY, json.dumps({"request_id": "retained"}).encode(), retain=True))
    device.wait_for_log("fieldlens.Classifier", "ignored a retained message")
    assert not [m for m in device.nucleus.iot_core.published if b'"retained"' in m.payload and m.topic == PREDICTION]


def test_stopping_the_run_stops_the_component(device: GreengrassCore) -> None:
    """Last in this module: the classifier is gone afterwards."""
    group = device.components["fieldlens.Classifier"].process
    assert group is not None
    stopped = device.stop("fieldlens.Classifier")
    assert (stopped.state, stopped.killed) == (State.FINISHED, False)  # SIGTERM was enough: no SIGKILL
    assert live_members(group.pid) == []  # the component itself, not only the shell of its Run step
    assert "fieldlens-classifier stopping on signal 15" in device.log("fieldlens.Classifier")
    wait_until(lambda: not device.nucleus.server.connected("fieldlens.Classifier"), 10, "its IPC connection closed")
    assert device.nucleus.server.open_streams("fieldlens.Classifier") == []
    assert device.nucleus.iot_core.subscribers(CLASSIFY) == []
    assert device.nucleus.iot_core.send(CLASSIFY, b"{}") == 0  # nobody listens now
    assert device.components["fieldlens.InferenceService"].state == State.RUNNING  # the others run on
    assert device.nucleus.server.protocol_errors == []  # nothing the real client sent was off the protocol
