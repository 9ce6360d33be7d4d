"""Status requests over the in-memory bus: the classifier built as the component builds it, the real
inference server (tiny model), a real uploader relaying its figures."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fieldlens_classifier.build import assemble_classifier, build_classifier
from fieldlens_classifier.config import ClassifierConfig
from fieldlens_classifier.service import Classifier
from fieldlens_classifier.status import MAX_PENDING, StatusResponder
from fieldlens_core.bus import Message
from fieldlens_core.bus.memory import InMemoryBus
from fieldlens_core.camera import Frame
from fieldlens_core.camera.test_pattern import TestPatternCamera
from fieldlens_core.inference.client import InferenceClient
from fieldlens_fielddata.destination import LocalDirectoryDestination
from fieldlens_fielddata.retry import Backoff
from fieldlens_fielddata.store import FieldStore
from fieldlens_fielddata.uploader import Uploader
from fieldlens_uploader.service import UploaderService
from tests.helpers.collector import ResponseCollector
from tests.helpers.field_data import written
from tests.helpers.waiting import wait_until

NAME = "beverage_container"
STATUS = f"/request/status/{NAME}"
ANSWERS = f"/response/status/{NAME}"
CLASSIFY = f"/request/classify/{NAME}"


def make_config(tmp_path: Path, socket_path: Path, **overrides: Any) -> ClassifierConfig:
    raw: dict[str, Any] = {
        "thing_name": "coop-7",
        "field_data_dir": tmp_path / "field",
        "camera": {"source": "test-pattern", "width": 64, "height": 64},
        "inference": {"service_name": "tiny", "socket_path": socket_path, "timeout_s": 2},
        **overrides,
    }
    return ClassifierConfig.model_validate(raw)


class Rig:
    """A classifier and its status responder on one in-memory bus, and what they answer."""

    def __init__(self, classifier: Classifier, bus: InMemoryBus, closing: list[Callable[[], None]]) -> None:
        self.classifier, self.bus, self.closing = classifier, bus, closing
        self.answers = ResponseCollector()  # status answers only
        self.predictions = ResponseCollector()
        bus.subscribe("/response/status/#", self.answers)
        bus.subscribe("/response/prediction/#", self.predictions)
        classifier.start()

    def status(self, payload: bytes | dict[str, Any] = b"", topic: str = STATUS) -> dict[str, Any]:
        before = len(self.answers.responses)
        self.bus.publish(topic, json.dumps(payload).encode() if isinstance(payload, dict) else payload)
        return self.answers.wait_for(before + 1)[before]

    def classify(self, payload: dict[str, Any]) -> dict[str, Any]:
        before = len(self.predictions.responses)
        self.bus.publish(CLASSIFY, json.dumps(payload).encode())
        return self.predictions.wait_for(before + 1)[before]

    def close(self) -> None:
        for close in self.closing:
            close()


def built(config: ClassifierConfig) -> Rig:
    bus = InMemoryBus()
    classifier, closing = build_classifier(config, bus)
    return Rig(classifier, bus, closing)


@pytest.fixture
def rig(tmp_path: Path, tiny_server: Path) -> Iterator[Rig]:
    rig = built(make_config(tmp_path, tiny_server))
    yield rig
    rig.close()


def test_a_named_request_gets_what_each_part_reports(rig: Rig) -> None:
    answer = rig.status()
    assert rig.answers.topics == [ANSWERS]
    assert answer["thing"] == "coop-7" and answer["name"] == NAME and len(answer["request_id"]) == 32
    assert answer["started"].endswith("Z") and answer["timestamp"].endswith("Z")
    model = answer["inference"]["model"]
    assert (model["name"], model["version"], model["variant"], model["services"]) == (
        "tiny-colour",
        "1.0.0",
        "fp32",
        ["tiny"],
    )
    assert len(model["sha256"]) == 64 and "error" not in answer["inference"]
    assert answer["queue"] == {
        "workers": 4,
        "in_flight": 0,
        "queued": 0,
        "max_held": 1004,
        "expected_wait_ms": 0.0,
        "max_wait_ms": 5000,
    }
    assert answer["requests"] == {"answered": 0, "predictions": 0, "busy": 0, "errors": {}}
    assert answer["continuous"]["running"] is False and answer["continuous"]["fps"] == 5.0
    assert "last_error" not in answer and "uploads" not in answer and "error" not in answer


def test_the_fleet_wide_request_is_answered_on_its_pair_and_the_console_message_is_echoed(rig: Rig) -> None:
    answer = rig.status({"request_id": "f-1", "message": "Hello from AWS IoT console"}, topic="/request/status")
    assert rig.answers.topics == ["/response/status"]
    assert answer["request_id"] == "f-1" and answer["message"] == "Hello from AWS IoT console"
    assert answer["thing"] == "coop-7" and answer["inference"]["model"]["name"] == "tiny-colour"


def test_without_fleet_topics_only_the_named_request_is_answered(tmp_path: Path, tiny_server: Path) -> None:
    rig = built(make_config(tmp_path, tiny_server, fleet_topics=False))
    try:
        rig.bus.publish("/request/status", b"")  # nobody subscribed: delivered to no one
        answer = rig.status({"request_id": "named"})
        assert answer["request_id"] == "named" and rig.answers.topics == [ANSWERS]
    finally:
        rig.close()


def test_counts_and_the_last_error_follow_the_responses(rig: Rig) -> None:
    for request_id in ("ok-1", "ok-2"):
        assert "predictions" in rig.classify({"request_id": request_id})
    refused = rig.classify({"request_id": "typo", "topk": 1})
    assert refused["error"]["code"] == "BAD_REQUEST"
    answer = rig.status()
    assert answer["requests"] == {"answered": 3, "predictions": 2, "busy": 0, "errors": {"BAD_REQUEST": 1}}
    last = answer["last_error"]
    assert last["code"] == "BAD_REQUEST" and "topk" in last["message"] and last["request_id"] == "typo"
    assert last["at"] == refused["timestamp"]

    rig.classifier.stop()  # its workers stop; later classify requests get BUSY, status still answers
    busy = rig.classify({"request_id": "late"})
    assert busy["error"]["code"] == "BUSY"
    answer = rig.status()
    assert answer["requests"]["busy"] == 1 and answer["requests"]["errors"] == {"BAD_REQUEST": 1, "BUSY": 1}
    assert answer["last_error"]["code"] == "BUSY" and answer["last_error"]["request_id"] == "late"


class GatedCamera(TestPatternCamera):
    """The test-pattern camera, holding each capture until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__(64, 64)
        self.entered, self.gate = threading.Event(), threading.Event()

    def capture(self) -> Frame:
        self.entered.set()
        self.gate.wait(10)
        return super().capture()


def test_in_flight_and_queued_split_the_backlog(tmp_path: Path, tiny_server: Path) -> None:
    config = make_config(tmp_path, tiny_server, workers=1)
    bus, camera = InMemoryBus(), GatedCamera()
    inference = InferenceClient(config.inference)
    classifier = assemble_classifier(config, bus, camera, inference, FieldStore(config.field_data_dir, "coop-7"))
    responder = StatusResponder(classifier, bus, inference.ping)
    classifier.on_start.append(responder.start)
    rig = Rig(classifier, bus, [camera.gate.set, classifier.stop, responder.stop, inference.close])
    try:
        for index in range(3):
            bus.publish(CLASSIFY, json.dumps({"request_id": f"r{index}"}).encode())
        assert camera.entered.wait(10)  # the worker took the first; two wait behind it
        queue = rig.status()["queue"]
        assert (queue["workers"], queue["in_flight"], queue["queued"], queue["max_held"]) == (1, 1, 2, 1001)
        camera.gate.set()
        rig.predictions.wait_for(3)
        # a request is held until its image is written too, just after its response
        wait_until(lambda: rig.status()["queue"]["in_flight"] == 0, what="the last request finished")
        answer = rig.status()
        assert answer["queue"]["queued"] == 0 and answer["queue"]["expected_wait_ms"] > 0
        assert answer["requests"]["predictions"] == 3
    finally:
        rig.close()


def test_continuous_mode_shows_when_it_runs_and_at_what_rate(rig: Rig) -> None:
    rig.bus.publish(f"/request/continuous/{NAME}", b'{"action": "start", "fps": 2}')
    try:
        continuous = rig.status()["continuous"]
        assert continuous["running"] is True and continuous["fps"] == 2.0
    finally:
        rig.bus.publish(f"/request/continuous/{NAME}", b'{"action": "stop"}')
    assert rig.status()["continuous"]["running"] is False


def test_the_uploaders_figures_are_relayed_with_how_long_ago_they_were_heard(rig: Rig, tmp_path: Path) -> None:
    config = rig.classifier.config
    destination = LocalDirectoryDestination(tmp_path / "bucket")
    uploader = UploaderService(
        Uploader(config.field_data_dir, destination, "coop-7"), Backoff(), rig.bus, "/status/field-data/coop-7", 2, 30
    )
    try:
        written(rig.classify({"request_id": "kept"})["image"])
        uploader.publish_status()
        uploads = rig.status()["uploads"]
        assert (uploads["thing"], uploads["queued"], uploads["uploaded"], uploads["failed"]) == ("coop-7", 1, 0, 0)
        assert uploads["destination"] == destination.description and uploads["heard_s_ago"] >= 0

        uploader.drain_once()
        uploader.publish_status()
        rig.bus.publish("/status/field-data/coop-7", b"{not a status")  # ignored: the last good one stays
        uploads = rig.status()["uploads"]
        assert (uploads["queued"], uploads["uploaded"]) == (0, 1) and uploads["uploaded_bytes"] > 0
    finally:
        uploader.stop()


def test_another_things_uploader_is_not_relayed(rig: Rig, tmp_path: Path) -> None:
    uploader = Uploader(tmp_path / "other", LocalDirectoryDestination(tmp_path / "bucket"), "coop-70")
    rig.bus.publish("/status/field-data/coop-70", json.dumps(uploader.status()).encode())
    assert "uploads" not in rig.status()
    uploader.close()


def test_an_inference_service_that_is_down_is_reported_and_the_rest_still_answers(
    tmp_path: Path, socket_dir: Path
) -> None:
    rig = built(make_config(tmp_path, socket_dir / "nobody.sock"))
    try:
        answer = rig.status()
        assert answer["inference"]["error"]["code"] == "INFERENCE_UNAVAILABLE"
        assert "not running" in answer["inference"]["error"]["message"] and "model" not in answer["inference"]
        assert answer["queue"]["workers"] == 4 and answer["requests"]["answered"] == 0
    finally:
        rig.close()


@pytest.fixture
def silent_socket(socket_dir: Path) -> Iterator[Path]:
    """A socket that accepts connections and never answers: a hung inference service."""
    path = socket_dir / "hung.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(16)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield path
    done.set()
    server.close()
    for connection in held:
        connection.close()


def test_a_hung_inference_service_is_reported_within_the_ping_wait(tmp_path: Path, silent_socket: Path) -> None:
    config = make_config(tmp_path, silent_socket)
    bus = InMemoryBus()
    classifier, closing = build_classifier(config, bus)
    inference = InferenceClient(config.inference)
    classifier.on_start.clear()
    responder = StatusResponder(classifier, bus, inference.ping, ping_wait_s=0.2)
    classifier.on_start.append(responder.start)
    rig = Rig(classifier, bus, [responder.stop, inference.close, *closing])
    try:
        error = rig.status()["inference"]["error"]
        assert error == {
            "code": "INFERENCE_TIMEOUT",
            "message": "the inference service did not answer a ping within 0.2 s",
        }
        # while one ping hangs, more requests than the responder holds: the surplus is refused at once
        for index in range(MAX_PENDING + 2):
            bus.publish(STATUS, json.dumps({"request_id": f"s{index}"}).encode())
        answers = rig.answers.wait_for(1 + MAX_PENDING + 2, timeout_s=20)[1:]
        busy = [a for a in answers if "error" in a]
        assert busy and all(a["error"]["code"] == "BUSY" for a in busy)
        assert len(busy) <= 2 and {a["request_id"] for a in answers} == {f"s{i}" for i in range(MAX_PENDING + 2)}
    finally:
        rig.close()


def test_bad_and_retained_requests_and_mqtt5_correlation_data(rig: Rig) -> None:
    refused = rig.status(b'{"request_id": "s9", "colour": 1}')
    assert refused["request_id"] == "s9" and refused["thing"] == "coop-7" and refused["name"] == NAME
    assert refused["error"]["code"] == "BAD_REQUEST" and "colour" in refused["error"]["message"]
    assert "inference" not in refused and "queue" not in refused

    before = len(rig.answers.responses)
    rig.bus.deliver(Message(STATUS, b'{"request_id": "replayed"}', retained=True))  # never a request
    rig.bus.deliver(Message(STATUS, b'{"request_id": "c"}', correlation_data=b"corr-1"))
    answers = rig.answers.wait_for(before + 1)
    assert [a["request_id"] for a in answers[before:]] == ["c"]
    assert rig.answers.messages[-1].correlation_data == b"corr-1"


def test_a_classify_reply_topic_may_not_be_a_status_topic(rig: Rig) -> None:
    response = rig.classify({"request_id": "spoof", "reply_topic": ANSWERS})
    assert response["error"]["code"] == "BAD_REQUEST" and "response topic" in response["error"]["message"]
    assert rig.answers.responses == []
