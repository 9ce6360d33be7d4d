"""The classifier over the in-memory bus, with real cameras and the real inference server (tiny model)."""

from __future__ import annotations

import functools
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fieldlens_classifier.admission import Admission
from fieldlens_classifier.build import assemble_classifier
from fieldlens_classifier.config import ClassifierConfig
from fieldlens_classifier.service import Classifier
from fieldlens_core.bus import Message
from fieldlens_core.bus.memory import InMemoryBus
from fieldlens_core.camera.folder import FolderCamera
from fieldlens_core.camera.test_pattern import TestPatternCamera
from fieldlens_core.inference.client import InferenceClient, InferenceResult
from fieldlens_fielddata.store import FieldStore, KeptImage, Reservation
from tests.helpers.collector import ResponseCollector
from tests.helpers.field_data import written
from tests.helpers.images import solid_jpeg
from tests.helpers.waiting import wait_until

REQUESTS = "/request/classify/beverage_container"
RESPONSES = "/response/prediction/beverage_container"


def make_config(tmp_path: Path, socket_path: Path, **overrides: Any) -> ClassifierConfig:
    raw: dict[str, Any] = {
        "thing_name": "coop-7",
        "field_data_dir": tmp_path / "field",
        "inference": {"service_name": "tiny", "socket_path": socket_path, "timeout_s": 2},
        **overrides,
    }
    return ClassifierConfig.model_validate(raw)


class Rig:
    """A started classifier, its bus, and the responses it publishes."""

    def __init__(self, config: ClassifierConfig, camera: Any, inference: Any = None) -> None:
        self.bus = InMemoryBus()
        self.responses = ResponseCollector()
        self.bus.subscribe("/response/#", self.responses)
        self.classifier = assemble_classifier(
            config,
            self.bus,
            camera,
            inference or InferenceClient(config.inference),
            FieldStore(config.field_data_dir, config.thing_name, config.s3_prefix),
        )
        self.classifier.start()

    def ask(self, payload: bytes | dict[str, Any] = b"", count: int = 1) -> dict[str, Any]:
        before = len(self.responses.responses)
        self.bus.publish(REQUESTS, json.dumps(payload).encode() if isinstance(payload, dict) else payload)
        return self.responses.wait_for(before + count)[before]


@pytest.fixture
def red_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "red.jpg").write_bytes(solid_jpeg((240, 10, 10)))
    return folder


@pytest.fixture
def rig(tmp_path: Path, tiny_server: Path, red_folder: Path) -> Iterator[Rig]:
    rig = Rig(make_config(tmp_path, tiny_server), FolderCamera(red_folder))
    yield rig
    rig.classifier.stop()


def test_a_request_gets_a_full_structured_prediction_and_the_image_is_kept(rig: Rig, red_folder: Path) -> None:
    response = rig.ask({"request_id": "abc", "top_k": 2})
    assert response["request_id"] == "abc" and response["thing"] == "coop-7"
    assert response["predictions"][0]["label"] == "red" and len(response["predictions"]) == 2
    assert response["predictions"][0]["confidence"] >= response["predictions"][1]["confidence"]
    assert response["model"]["name"] == "tiny-colour" and response["model"]["version"] == "1.0.0"
    assert set(response["timing_ms"]) == {"capture", "inference", "total"}
    assert response["timestamp"].endswith("Z") and "error" not in response

    image = response["image"]
    assert image["kept"] and image["reason"] == "policy: always"
    kept = written(image)
    assert kept.read_bytes() == (red_folder / "red.jpg").read_bytes()
    assert image["s3_key"].startswith("field-data/coop-7/") and image["s3_key"].endswith(f"{image['id']}.jpg")
    sidecar = json.loads(kept.with_suffix(".json").read_text())
    assert sidecar["request_id"] == "abc" and sidecar["prediction"] == "red"
    assert sidecar["model"]["sha256"] == response["model"]["sha256"] and sidecar["capture"]["file"] == "red.jpg"
    assert rig.responses.topics == [RESPONSES]


def test_an_empty_payload_is_a_request(rig: Rig) -> None:
    response = rig.ask(b"")
    assert len(response["request_id"]) == 32 and len(response["predictions"]) == 5 - 2  # 3 labels only


@pytest.mark.parametrize(
    ("payload", "code", "fragment"),
    [
        (b"{oops", "BAD_REQUEST", "not valid JSON"),
        (b'{"request_id": "r9", "top_k": "five"}', "BAD_REQUEST", "top_k"),
        (b'{"request_id": "r9", "colour": 1}', "BAD_REQUEST", "unknown field(s): colour"),
        (b"[]", "BAD_REQUEST", "JSON object"),
        (b'{"pad": "' + b"x" * 70_000 + b'"}', "PAYLOAD_TOO_LARGE", "limit is 65536"),
        (b'{"reply_topic": "/elsewhere/x"}', "BAD_REQUEST", "reply_topic must start with '/response/'"),
    ],
)
def test_bad_requests_get_an_error_envelope(rig: Rig, payload: bytes, code: str, fragment: str) -> None:
    response = rig.ask(payload)
    assert response["error"]["code"] == code and fragment in response["error"]["message"]
    assert "predictions" not in response and response["thing"] == "coop-7"
    if b'"r9"' in payload:
        assert response["request_id"] == "r9"


def test_the_classifier_survives_bad_input_and_keeps_answering(rig: Rig) -> None:
    rig.ask(b"\x00\xff garbage")
    assert rig.ask({"top_k": 1})["predictions"][0]["label"] == "red"


def test_a_reply_topic_is_honoured(rig: Rig) -> None:
    rig.ask({"reply_topic": "/response/mine"})
    assert rig.responses.topics == ["/response/mine"]


def test_save_keeps_an_image_the_policy_would_not(tmp_path: Path, tiny_server: Path, red_folder: Path) -> None:
    rig = Rig(make_config(tmp_path, tiny_server, sampling={"strategies": []}), FolderCamera(red_folder))
    try:
        assert rig.ask({})["image"] == {
            "id": rig.responses.responses[0]["image"]["id"],
            "kept": False,
            "reason": "policy: no strategy wanted it",
        }
        saved = rig.ask({"save": True})["image"]
        assert saved["kept"] and saved["reason"] == "request: save" and written(saved).exists()
    finally:
        rig.classifier.stop()


def test_no_camera_image_is_camera_unavailable(tmp_path: Path, tiny_server: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    rig = Rig(make_config(tmp_path, tiny_server), FolderCamera(empty))
    try:
        response = rig.ask({"request_id": "c1"})
        assert response["error"]["code"] == "CAMERA_UNAVAILABLE" and response["request_id"] == "c1"
    finally:
        rig.classifier.stop()


def test_no_inference_service_is_inference_unavailable(tmp_path: Path, socket_dir: Path) -> None:
    rig = Rig(make_config(tmp_path, socket_dir / "none.sock"), TestPatternCamera(64, 64))
    try:
        assert rig.ask({})["error"]["code"] == "INFERENCE_UNAVAILABLE"
    finally:
        rig.classifier.stop()


def test_a_silent_inference_service_is_inference_timeout(tmp_path: Path, socket_dir: Path) -> None:
    path = socket_dir / "silent.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    rig = Rig(make_config(tmp_path, path, inference={"socket_path": path, "timeout_s": 0.3}), TestPatternCamera(64, 64))
    try:
        response = rig.ask({})
        assert response["error"]["code"] == "INFERENCE_TIMEOUT" and "0.3s" in response["error"]["message"]
    finally:
        rig.classifier.stop()
        listener.close()


class GatedInference:
    """Holds every call until released, so a test can fill the queue deterministically."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def classify(self, body: bytes, content_type: str = "image/jpeg", top_k: int = 5) -> InferenceResult:
        self.entered.set()
        assert self.release.wait(10)
        return InferenceResult.model_validate(
            {"predictions": [{"label": "x", "confidence": 0.9}], "model": {"name": "m", "version": "1", "sha256": "0"}}
        )


def test_a_burst_of_10000_holds_at_most_queue_size_and_answers_everything_it_admitted(
    tmp_path: Path, socket_dir: Path
) -> None:
    gate = GatedInference()
    config = make_config(  # a budget no wait here reaches: the gate's real-time hold is not the point
        tmp_path, socket_dir / "unused.sock", workers=2, queue_size=50, max_wait_ms=600_000, sampling={"strategies": []}
    )
    rig = Rig(config, TestPatternCamera(32, 32), gate)
    try:
        for n in range(10_000):  # the in-memory bus delivers each on this thread: admission decides at once
            rig.bus.publish(REQUESTS, f'{{"request_id": "r{n}"}}'.encode())
        busy = rig.responses.wait_for(10_000 - 52)
        assert (
            all(r["error"]["code"] == "BUSY" for r in busy)
            and "the most this device holds" in busy[0]["error"]["message"]
        )
        gate.release.set()
        answered = rig.responses.wait_for(10_000)[10_000 - 52 :]
        assert sorted(r["request_id"] for r in answered) == sorted(f"r{n}" for n in range(52))
        assert all("predictions" in r for r in answered)
    finally:
        gate.release.set()
        rig.classifier.stop()


def test_a_full_queue_answers_busy_at_once_and_loses_no_queued_request(tmp_path: Path, socket_dir: Path) -> None:
    gate = GatedInference()
    rig = Rig(
        make_config(tmp_path, socket_dir / "unused.sock", workers=1, queue_size=1), TestPatternCamera(32, 32), gate
    )
    try:
        rig.bus.publish(REQUESTS, b'{"request_id": "first"}')
        assert gate.entered.wait(5)  # the worker holds "first"
        rig.bus.publish(REQUESTS, b'{"request_id": "queued"}')  # fills the queue
        rig.bus.publish(REQUESTS, b'{"request_id": "third"}')
        busy = rig.responses.wait_for(1)[0]
        assert (busy["request_id"], busy["error"]["code"]) == ("third", "BUSY")
        gate.release.set()
        answered = {r["request_id"]: r for r in rig.responses.wait_for(3)}
        assert "predictions" in answered["first"] and "predictions" in answered["queued"]
    finally:
        gate.release.set()
        rig.classifier.stop()


class UnreadableStore(FieldStore):
    """A store that cannot even look for room (the card went away)."""

    def reserve(self, *args: Any, **kwargs: Any) -> Any:
        raise OSError(5, "Input/output error")


class FullDisk(FieldStore):
    """A disk that fills between the reservation and the write."""

    def write(self, reservation: Reservation) -> KeptImage:
        raise OSError(28, "No space left on device")


class HeldWrites(FieldStore):
    """Writes wait for ``release``: shows what goes out before the image is on disk."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()

    def write(self, reservation: Reservation) -> KeptImage:
        self.release.wait(10)
        return super().write(reservation)


def classifier_on(tmp_path: Path, tiny_server: Path, folder: Path, store: FieldStore) -> tuple[Classifier, InMemoryBus]:
    config = make_config(tmp_path, tiny_server)
    bus = InMemoryBus()
    classifier = assemble_classifier(config, bus, FolderCamera(folder), InferenceClient(config.inference), store)
    classifier.start()
    return classifier, bus


def test_a_store_that_cannot_make_room_still_answers_with_the_prediction(
    tmp_path: Path, tiny_server: Path, red_folder: Path
) -> None:
    classifier, bus = classifier_on(tmp_path, tiny_server, red_folder, UnreadableStore(tmp_path / "field", "t"))
    responses = ResponseCollector()
    bus.subscribe(RESPONSES, responses)
    try:
        bus.publish(REQUESTS, b"{}")
        response = responses.wait_for(1)[0]
        assert response["predictions"][0]["label"] == "red"
        assert response["image"]["kept"] is False and "Input/output error" in response["image"]["reason"]
    finally:
        classifier.stop()


def test_the_response_goes_out_before_the_image_is_written(tmp_path: Path, tiny_server: Path, red_folder: Path) -> None:
    store = HeldWrites(tmp_path / "field", "coop-7")
    classifier, bus = classifier_on(tmp_path, tiny_server, red_folder, store)
    responses = ResponseCollector()
    bus.subscribe(RESPONSES, responses)
    try:
        bus.publish(REQUESTS, b"{}")
        image = responses.wait_for(1)[0]["image"]
        assert image["kept"] is True and not Path(image["path"]).exists()  # named, not written yet
        store.release.set()
        wait_until(Path(image["path"]).with_suffix(".json").exists, 10, "the sidecar written")
        assert Path(image["path"]).read_bytes() == (red_folder / "red.jpg").read_bytes()
        assert json.loads(Path(image["path"]).with_suffix(".json").read_text())["s3_key"] == image["s3_key"]
    finally:
        store.release.set()
        classifier.stop()


def test_a_write_that_fails_after_the_response_is_published_on_the_image_topic(
    tmp_path: Path, tiny_server: Path, red_folder: Path
) -> None:
    classifier, bus = classifier_on(tmp_path, tiny_server, red_folder, FullDisk(tmp_path / "field", "coop-7"))
    responses, lost = ResponseCollector(), ResponseCollector()
    bus.subscribe(RESPONSES, responses)
    bus.subscribe("/event/image/#", lost)
    try:
        bus.publish(REQUESTS, json.dumps({"request_id": "r-1"}).encode())
        response = responses.wait_for(1)[0]
        assert response["predictions"][0]["label"] == "red" and response["image"]["kept"] is True
        event = lost.wait_for(1)[0]
        assert lost.topics == ["/event/image/beverage_container"]
        assert (event["request_id"], event["thing"], event["image"]["id"]) == ("r-1", "coop-7", response["image"]["id"])
        assert event["image"]["kept"] is False and "No space left" in event["image"]["reason"]
    finally:
        classifier.stop()


def test_live_updates_apply_hot_fields_and_defer_the_rest(rig: Rig) -> None:
    current = rig.classifier.config
    rig.classifier.update_config(current.model_copy(update={"default_top_k": 1, "name": "other"}))
    assert rig.classifier.config.default_top_k == 1 and rig.classifier.config.name == "beverage_container"
    assert len(rig.ask({})["predictions"]) == 1


def test_after_stop_requests_get_busy(rig: Rig) -> None:
    rig.classifier.stop()
    response = rig.ask({"request_id": "late"})
    assert (response["request_id"], response["error"]["code"]) == ("late", "BUSY")


def test_the_sampling_policy_and_the_disk_cap_decide_what_is_kept(
    tmp_path: Path, tiny_server: Path, red_folder: Path
) -> None:
    sampling = {"strategies": [{"type": "least_confidence", "threshold": 1.0}], "caps": {"perMinute": 1}}
    rig = Rig(make_config(tmp_path, tiny_server, sampling=sampling), FolderCamera(red_folder))
    try:
        first = rig.ask({})["image"]
        assert first["kept"] and first["reason"].startswith("policy: least_confidence (")
        assert rig.ask({})["image"]["reason"] == "cap: per_minute (1) reached"
        sidecar = json.loads(written(first).with_suffix(".json").read_text())
        assert sidecar["reason"] == first["reason"] and 0 < sidecar["score"] < 1
    finally:
        rig.classifier.stop()


def test_a_full_store_answers_with_the_prediction_and_says_why_nothing_was_kept(
    tmp_path: Path, tiny_server: Path, red_folder: Path
) -> None:
    config = make_config(tmp_path, tiny_server)
    bus, responses = InMemoryBus(), ResponseCollector()
    bus.subscribe(RESPONSES, responses)
    store = FieldStore(tmp_path / "capped", "t", max_images=1)
    classifier = assemble_classifier(config, bus, FolderCamera(red_folder), InferenceClient(config.inference), store)
    classifier.start()
    try:
        bus.publish(REQUESTS, b"{}")
        bus.publish(REQUESTS, b"{}")
        first, second = responses.wait_for(2)
        assert first["image"]["kept"] != second["image"]["kept"]
        refused = second if first["image"]["kept"] else first
        assert refused["image"]["reason"].startswith("disk cap:") and refused["predictions"][0]["label"] == "red"
    finally:
        classifier.stop()


# First contact: what a new user sends from the AWS IoT console's MQTT test client.


def test_the_iot_consoles_default_message_gets_a_prediction_with_its_note_echoed(rig: Rig) -> None:
    response = rig.ask(b'{"message": "Hello from AWS IoT console"}')
    assert response["predictions"][0]["label"] == "red"
    assert response["message"] == "Hello from AWS IoT console"


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b'{"message": "Hello", "mesage": 1}', "unknown field(s): mesage"),
        (b'{"message": 42}', "message"),
        ('{"message": "' + "x" * 257 + '"}', "at most 256"),
        (b'{"message": "line\\nbreak"}', "printable"),
    ],
)
def test_message_is_bounded_text_and_unknown_fields_stay_refused(rig: Rig, payload: bytes | str, fragment: str) -> None:
    raw = payload.encode() if isinstance(payload, str) else payload
    response = rig.ask(raw)
    assert response["error"]["code"] == "BAD_REQUEST" and fragment in response["error"]["message"]


def test_the_fleet_wide_pair_is_answered_on_the_bare_response_topic(rig: Rig) -> None:
    rig.bus.publish("/request/classify", b'{"request_id": "fleet"}')
    response = rig.responses.wait_for(1)[0]
    assert response["request_id"] == "fleet" and response["thing"] == "coop-7" and "predictions" in response
    assert rig.responses.topics == ["/response/prediction"]
    rig.ask({"request_id": "named"})
    assert rig.responses.topics == ["/response/prediction", RESPONSES]


def test_the_fleet_pair_can_be_turned_off(tmp_path: Path, tiny_server: Path, red_folder: Path) -> None:
    rig = Rig(make_config(tmp_path, tiny_server, fleet_topics=False), FolderCamera(red_folder))
    try:
        rig.bus.publish("/request/classify", b"{}")
        assert rig.classifier.config.routes == {REQUESTS: RESPONSES}
        assert rig.ask({"request_id": "named"})["request_id"] == "named"
        assert rig.responses.topics == [RESPONSES]  # the fleet request found no subscriber
    finally:
        rig.classifier.stop()


class CountingCamera(FolderCamera):
    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.captures = 0

    def capture(self) -> Any:
        self.captures += 1
        return super().capture()


@pytest.mark.parametrize("payload", [b'{"request_id": "stale"}', b""], ids=["request", "clearing-publish"])
def test_a_retained_message_is_never_run(tmp_path: Path, tiny_server: Path, red_folder: Path, payload: bytes) -> None:
    camera = CountingCamera(red_folder)
    rig = Rig(make_config(tmp_path, tiny_server), camera)
    try:
        rig.bus.deliver(Message(REQUESTS, payload, retained=True))
        fresh = rig.ask({"request_id": "fresh"})  # answered after the retained one would have been
        assert fresh["request_id"] == "fresh" and [r["request_id"] for r in rig.responses.responses] == ["fresh"]
        assert camera.captures == 1
    finally:
        rig.classifier.stop()


def test_mqtt5_response_topic_and_correlation_data_are_honoured(rig: Rig) -> None:
    rig.bus.deliver(Message(REQUESTS, b"{}", response_topic="/response/console/7", correlation_data=b"\x00c1"))
    rig.responses.wait_for(1)
    reply = rig.responses.messages[0]
    assert reply.topic == "/response/console/7" and reply.correlation_data == b"\x00c1"
    assert "predictions" in json.loads(reply.payload)


def test_a_response_topic_outside_the_prefix_is_refused_on_the_default_topic(rig: Rig) -> None:
    rig.bus.deliver(Message(REQUESTS, b'{"request_id": "r"}', response_topic="/elsewhere", correlation_data=b"k"))
    rig.responses.wait_for(1)
    reply = rig.responses.messages[0]
    assert reply.topic == RESPONSES and reply.correlation_data == b"k"
    assert json.loads(reply.payload)["error"]["code"] == "BAD_REQUEST"


def test_reply_topic_in_the_payload_wins_over_the_mqtt5_response_topic(rig: Rig) -> None:
    payload = b'{"reply_topic": "/response/from-payload"}'
    rig.bus.deliver(Message(REQUESTS, payload, response_topic="/response/from-property"))
    rig.responses.wait_for(1)
    assert rig.responses.topics == ["/response/from-payload"]


# Hardening: each attack from the adversarial review, reproduced.


@pytest.mark.parametrize("topic", ["/response/prediction/victim", "/response/prediction/a/b", "/response/x\u0001y"])
def test_a_reply_may_not_spoof_another_device_or_break_the_broker(rig: Rig, topic: str) -> None:
    response = rig.ask({"request_id": "spoof", "reply_topic": topic})
    assert response["error"]["code"] == "BAD_REQUEST" and rig.responses.topics == [RESPONSES]


def test_a_reply_to_this_devices_own_fleet_topic_is_allowed(rig: Rig) -> None:
    rig.ask({"reply_topic": "/response/prediction"})
    assert rig.responses.topics == ["/response/prediction"]


@pytest.mark.parametrize("payload", [b"[" * 30_000, b'{"top_k": ' + b"[" * 30_000, b'{"a":' * 10_000])
def test_deeply_nested_json_gets_exactly_one_bad_request(rig: Rig, payload: bytes) -> None:
    response = rig.ask(payload)
    assert response["error"]["code"] == "BAD_REQUEST"
    assert len(rig.responses.responses) == 1


def test_a_key_cannot_forge_a_log_line(rig: Rig) -> None:
    import io
    import logging

    from fieldlens_core.lifecycle import EscapingFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(EscapingFormatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("fieldlens_classifier")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        forged = "x\n2026-11-23 22:00:00,000 ERROR fieldlens: FORGED-LINE\x00"
        assert rig.ask(json.dumps({forged: 1}).encode())["error"]["code"] == "BAD_REQUEST"
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines and all(line.startswith(("INFO ", "WARNING ")) for line in lines)
    assert "\\n2026-11-23" in stream.getvalue() and "\\x00" in stream.getvalue() and "\x00" not in stream.getvalue()


class BrokenStore(FieldStore):
    """A bug in keeping: before the response (reserving room) or after it (writing)."""

    def __init__(self, root: Path, broken: str) -> None:
        super().__init__(root, "t")
        self.broken = broken

    def reserve(self, *args: Any, **kwargs: Any) -> Any:
        if self.broken == "reserve":
            raise KeyError("a bug in keeping")
        return super().reserve(*args, **kwargs)

    def write(self, reservation: Reservation) -> KeptImage:
        raise KeyError("a bug in keeping")


@pytest.mark.parametrize("broken", ["reserve", "write"])
def test_a_worker_survives_a_bug_and_every_request_is_answered(
    tmp_path: Path, tiny_server: Path, red_folder: Path, broken: str
) -> None:
    config = make_config(tmp_path, tiny_server, workers=2)
    bus, responses, lost = InMemoryBus(), ResponseCollector(), ResponseCollector()
    bus.subscribe("/response/#", responses)
    bus.subscribe("/event/image/#", lost)
    store = BrokenStore(tmp_path / "field", broken)
    classifier = assemble_classifier(config, bus, FolderCamera(red_folder), InferenceClient(config.inference), store)
    classifier.start()
    try:
        for index in range(6):  # more than the workers: a dead worker would leave some unanswered
            bus.publish("/request/classify", json.dumps({"request_id": f"r{index}"}).encode())
        answered = responses.wait_for(6)
        assert sorted(r["request_id"] for r in answered) == [f"r{i}" for i in range(6)]
        if broken == "reserve":  # before the response: the response is the error
            assert {r["error"]["code"] for r in answered} == {"INTERNAL_ERROR"}
        else:  # after it: the predictions went out, and each lost image is reported
            assert all(r["predictions"][0]["label"] == "red" for r in answered)
            reported = lost.wait_for(6)
            assert sorted(e["request_id"] for e in reported) == [f"r{i}" for i in range(6)]
            assert all(e["image"]["reason"] == "internal error: KeyError: 'a bug in keeping'" for e in reported)
    finally:
        classifier.stop()


def test_stopping_is_bounded_and_what_is_still_queued_gets_busy(tmp_path: Path, socket_dir: Path) -> None:
    gate = GatedInference()
    rig = Rig(
        make_config(tmp_path, socket_dir / "unused.sock", workers=1, queue_size=1), TestPatternCamera(32, 32), gate
    )
    rig.bus.publish(REQUESTS, b'{"request_id": "held"}')
    assert gate.entered.wait(5)
    rig.bus.publish(REQUESTS, b'{"request_id": "queued"}')
    stopper = threading.Thread(target=rig.classifier.stop, kwargs={"timeout_s": 0.2})
    stopper.start()
    busy = rig.responses.wait_for(1)[0]  # answered while the held request is still held
    assert (busy["request_id"], busy["error"]["code"]) == ("queued", "BUSY")
    gate.release.set()
    stopper.join(10)
    assert not stopper.is_alive()


def test_a_save_flood_is_capped_and_the_response_says_why(tmp_path: Path, tiny_server: Path, red_folder: Path) -> None:
    sampling = {"strategies": [], "saveCaps": {"perMinute": 2}}
    rig = Rig(make_config(tmp_path, tiny_server, sampling=sampling), FolderCamera(red_folder))
    try:
        kept = [rig.ask({"save": True})["image"] for _ in range(4)]
        assert [image["kept"] for image in kept] == [True, True, False, False]
        assert kept[2]["reason"] == "save cap: per_minute (2) reached; policy: no strategy wanted it"
        assert json.loads(written(kept[0]).with_suffix(".json").read_text())["saved"] is True
    finally:
        rig.classifier.stop()


def sidecar(image: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(written(image).with_suffix(".json").read_text())
    return loaded


def test_saves_past_their_caps_never_keep_less_than_the_policy(rig: Rig) -> None:
    """Someone collecting training images with save requests, under the default policy (always)
    and save caps (10 a minute), once kept 10 of them and lost the rest."""
    kept = [rig.ask({"save": True})["image"] for _ in range(30)]
    assert all(image["kept"] for image in kept)
    assert [image["reason"] for image in kept[:10]] == ["request: save"] * 10
    assert {image["reason"] for image in kept[10:]} == {"policy: always; save cap: per_minute (10) reached"}
    assert [sidecar(image)["saved"] for image in kept] == [True] * 10 + [False] * 20  # the policy's, past the cap
    assert all(written(image).exists() for image in kept)


def test_a_save_past_its_caps_that_the_policy_refuses_names_both(
    tmp_path: Path, tiny_server: Path, red_folder: Path
) -> None:
    sampling = {"strategies": [{"type": "confidence_band", "low": 0.0, "high": 1.0}]}  # excludes every image
    rig = Rig(make_config(tmp_path, tiny_server, sampling=sampling), FolderCamera(red_folder))
    try:
        assert rig.ask({})["image"]["reason"] == "policy: no strategy wanted it"
        kept = [rig.ask({"save": True})["image"] for _ in range(11)]
        assert [image["kept"] for image in kept] == [True] * 10 + [False]
        assert kept[10]["reason"] == "save cap: per_minute (10) reached; policy: no strategy wanted it"
    finally:
        rig.classifier.stop()


def test_a_save_past_its_caps_is_kept_as_sampled_and_evicts_nothing_not_yet_uploaded(
    tmp_path: Path, tiny_server: Path, red_folder: Path
) -> None:
    """Past its caps a save is the policy's keep: were it filed as saved, it would evict sampled images."""
    config = make_config(tmp_path, tiny_server, sampling={"saveCaps": {"perMinute": 1}})
    bus, responses = InMemoryBus(), ResponseCollector()
    bus.subscribe(RESPONSES, responses)
    store = FieldStore(tmp_path / "capped", "t", max_images=3)
    classifier = assemble_classifier(config, bus, FolderCamera(red_folder), InferenceClient(config.inference), store)
    classifier.start()
    try:

        def ask(payload: bytes) -> dict[str, Any]:
            before = len(responses.responses)
            bus.publish(REQUESTS, payload)
            image: dict[str, Any] = responses.wait_for(before + 1)[before]["image"]
            if image["kept"]:
                written(image)  # on disk before the next request, so that it could be evicted
            return image

        sampled, saved, past_cap = ask(b"{}"), ask(b'{"save": true}'), ask(b'{"save": true}')
        assert [sidecar(image)["saved"] for image in (sampled, saved, past_cap)] == [False, True, False]
        refused = ask(b'{"save": true}')  # the store is full of images not yet uploaded
        assert not refused["kept"] and refused["reason"].startswith("disk cap:")
        assert all(Path(image["path"]).exists() for image in (sampled, saved, past_cap))
    finally:
        classifier.stop()


def test_the_reply_prefix_can_hold_the_thing_name_as_the_fleet_policy_does(
    tmp_path: Path, tiny_server: Path, red_folder: Path
) -> None:
    """Over AWS IoT Core directly, a publish outside the IoT policy closes the connection: refuse it first."""
    rig = Rig(
        make_config(tmp_path, tiny_server, reply_topic_prefix="/response/reply/{thing}/"), FolderCamera(red_folder)
    )
    try:
        assert "predictions" in rig.ask({"reply_topic": "/response/reply/coop-7/console"})
        refused = rig.ask({"reply_topic": "/response/reply/coop-70/console"})
        assert "'/response/reply/coop-7/'" in refused["error"]["message"]
        assert rig.responses.topics == ["/response/reply/coop-7/console", RESPONSES]
    finally:
        rig.classifier.stop()


class ClockedInference(GatedInference):
    """Each call takes ``service_s`` of an injected clock (the first waits for ``release`` too)."""

    def __init__(self, clock: list[float], service_s: float) -> None:
        super().__init__()
        self.clock, self.service_s = clock, service_s

    def classify(self, body: bytes, content_type: str = "image/jpeg", top_k: int = 5) -> InferenceResult:
        result = super().classify(body, content_type, top_k)
        self.clock[0] += self.service_s
        return result


def test_a_held_request_that_can_no_longer_be_answered_in_time_gets_busy_not_a_late_answer(
    tmp_path: Path, socket_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """21 admitted at once with nothing measured yet; each takes 125 ms of a 1 s budget on one
    worker: the first 8 are answered within it, the other 13 get BUSY when the worker reaches them
    (before, they were answered up to 2.6 s after they were admitted). test_admission.py: the flood."""
    clock = [0.0]
    monkeypatch.setattr("fieldlens_classifier.service.Admission", functools.partial(Admission, clock=lambda: clock[0]))
    inference = ClockedInference(clock, 0.125)
    config = make_config(
        tmp_path, socket_dir / "unused.sock", workers=1, queue_size=20, max_wait_ms=1000, sampling={"strategies": []}
    )
    rig = Rig(config, TestPatternCamera(32, 32), inference)
    try:
        for n in range(21):
            rig.bus.publish(REQUESTS, f'{{"request_id": "r{n}"}}'.encode())
        inference.release.set()
        answered = rig.responses.wait_for(21)
        assert [r["request_id"] for r in answered if "predictions" in r] == [f"r{n}" for n in range(8)]
        late = [r["error"] for r in answered if "error" in r]
        assert len(late) == 13 and all(e["code"] == "BUSY" for e in late)
        assert late[0]["message"].startswith("waited 1000 ms for a worker; with 125 ms of work")
        assert rig.classifier.admission.held == 0
    finally:
        inference.release.set()
        rig.classifier.stop()
