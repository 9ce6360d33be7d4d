"""Continuous mode through the classifier: a scripted video from the folder camera, a stand-in model
that reads each frame's colour, the in-memory bus and the real field store."""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fieldlens_classifier.build import assemble_classifier
from fieldlens_classifier.config import ClassifierConfig
from fieldlens_classifier.continuous import ContinuousLoop
from fieldlens_classifier.frame import ClassifiedFrame
from fieldlens_core.bus import Message
from fieldlens_core.bus.memory import InMemoryBus
from fieldlens_core.camera import Camera, Frame
from fieldlens_core.camera.folder import FolderCamera
from fieldlens_core.inference.client import InferenceResult
from fieldlens_fielddata.directory import FieldDataDir
from fieldlens_fielddata.store import FieldStore
from tests.helpers.collector import ResponseCollector
from tests.helpers.field_data import written
from tests.helpers.images import solid_jpeg
from tests.helpers.video import COLOURS, ColourModel, script, write_video
from tests.helpers.waiting import wait_until

NAME = "conveyor"
EVENTS = f"/event/classification/{NAME}"
COMMANDS = f"/request/continuous/{NAME}"
ANSWERS = f"/response/continuous/{NAME}"


class Rig:
    def __init__(
        self,
        tmp_path: Path,
        camera: Camera,
        sampling: dict[str, Any] | None = None,
        model: ColourModel | None = None,
        **continuous: Any,
    ) -> None:
        self.config = ClassifierConfig.model_validate(
            {
                "name": NAME,
                "thing_name": "belt-1",
                "field_data_dir": tmp_path / "field",
                "continuous": {"fps": None, **continuous},
                # by default nothing sampled: what is kept is the events' own
                "sampling": {"strategies": []} if sampling is None else sampling,
            }
        )
        self.bus = InMemoryBus()
        self.events, self.answers, self.frames = ResponseCollector(), ResponseCollector(), ResponseCollector()
        self.bus.subscribe("/event/classification/#", self.events)
        self.bus.subscribe("/response/continuous/#", self.answers)
        self.bus.subscribe("/event/frame/#", self.frames)
        self.store = FieldStore(self.config.field_data_dir, "belt-1", sync_interval_s=0)
        self.model = model or ColourModel()
        self.classifier = assemble_classifier(self.config, self.bus, camera, self.model, self.store)
        self.classifier.start()

    def command(self, payload: dict[str, Any] | bytes, topic: str = COMMANDS, **properties: Any) -> dict[str, Any]:
        before = len(self.answers.responses)
        body = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        self.bus.deliver(Message(topic, body, **properties))
        return self.answers.wait_for(before + 1)[before]

    def sidecars(self) -> list[dict[str, Any]]:
        return [json.loads(path.read_text()) for path in sorted(self.config.field_data_dir.rglob("*.json"))]


@pytest.fixture
def rig_of(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(
        camera: Camera, sampling: dict[str, Any] | None = None, model: ColourModel | None = None, **continuous: Any
    ) -> Rig:
        rigs.append(Rig(tmp_path, camera, sampling, model, **continuous))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.classifier.stop()


def test_a_scripted_video_gives_one_start_and_one_end_per_object(tmp_path: Path, rig_of: Callable[..., Rig]) -> None:
    video = script(["hen", "egg", "fox"], frames_each=30, gap=10, odd_every=10)
    rig = rig_of(FolderCamera(write_video(tmp_path / "video", video.frames), repeat=False), enabled=True)
    events = rig.events.wait_for(6)
    assert [(e["type"], e["label"]) for e in events] == [
        ("start", "hen"), ("end", "hen"), ("start", "egg"), ("end", "egg"), ("start", "fox"), ("end", "fox"),
    ]  # fmt: skip
    wait_until(lambda: rig.classifier.continuous.status().frames == len(video.frames), 10, "the whole video")
    status = rig.classifier.continuous.status()
    assert status.running and status.events == 3 and status.in_view is None and rig.model.calls == len(video.frames)
    for start, end in zip(events[::2], events[1::2], strict=True):
        assert start["event_id"] == end["event_id"] and start["thing"] == "belt-1"
        assert start["started"] == end["started"] <= end["ended"] and "ended" not in start and "image" not in start
        assert end["frames"] >= 25 and 0.5 <= start["confidence"] <= 1 and 0.5 <= end["confidence"] <= 1
        assert end["image"]["kept"] is True and end["model"]["name"] == "colours"
    sidecars = rig.sidecars()
    best = [s for s in sidecars if s.get("event_role") == "best"]
    assert sorted(s["event_id"] for s in best) == sorted(e["event_id"] for e in events[1::2])
    assert {s["image_id"] for s in best} == {e["image"]["id"] for e in events[1::2]}
    for end in events[1::2]:
        kept = next(s for s in best if s["event_id"] == end["event_id"])
        assert kept["prediction"] == end["label"] and kept["reason"] == "event best frame"
    boundaries = [s for s in sidecars if s.get("event_role") == "boundary"]
    assert len(boundaries) == 6 and {s["event_id"] for s in boundaries} == {e["event_id"] for e in events}
    rig.classifier.continuous.stop()
    assert len(rig.events.responses) == 6  # nothing was in view: stopping ends no event


def test_an_events_best_frame_the_policy_kept_before_the_event_started_is_kept_for_the_event(
    tmp_path: Path, rig_of: Callable[..., Rig]
) -> None:
    """The default policy keeps every frame, the event's first frame too, before the smoother has
    started the event (it starts once the label has led ``holdFrames``): with a steady confidence that
    first frame is the event's best. The end must name a kept image whose sidecar is the event's
    (found on real libcamera, tests/components/fieldlens_classifier/test_main_picamera2_libcamera.py)."""
    video = script(["hen"], frames_each=8, gap=5, odd_every=100)
    rig = rig_of(FolderCamera(write_video(tmp_path / "video", video.frames), repeat=False), {}, enabled=True)
    start, end = rig.events.wait_for(2)
    assert (start["type"], end["type"], end["event_id"]) == ("start", "end", start["event_id"])
    sidecar = json.loads(written(end["image"]).with_suffix(".json").read_text())
    assert sidecar["image_id"] == end["image"]["id"] and sidecar["prediction"] == "hen"
    assert (sidecar.get("event_id"), sidecar.get("event_role")) == (end["event_id"], "best"), sidecar
    assert sidecar["reason"] == "event best frame"
    # the best frame is the event's first, taken before the start (the case at stake); the policy
    # kept it too, as it kept every frame, with no event then
    assert sidecar["timestamp"] == start["started"]
    best = sidecar["capture"]["frame"]
    policy = [s for s in rig.sidecars() if s.get("event_role") is None]
    assert [s.get("event_id") for s in policy if s["capture"]["frame"] == best] == [None]
    assert any(s.get("event_id") == end["event_id"] for s in policy)  # those after the start name it


def test_commands_start_stop_and_report_and_the_console_default_asks_for_the_status(
    tmp_path: Path, rig_of: Callable[..., Rig]
) -> None:
    rig = rig_of(FolderCamera(write_video(tmp_path / "video", ["hen"] * 5)))
    hello = rig.command({"message": "Hello from AWS IoT console"}, topic="/request/continuous")
    assert rig.answers.topics[-1] == "/response/continuous"  # the bare pair, like /request/classify
    assert hello["continuous"]["running"] is False and hello["message"] == "Hello from AWS IoT console"
    started = rig.command({"request_id": "go", "action": "start", "fps": 50})
    assert rig.answers.topics[-1] == ANSWERS and started["request_id"] == "go"
    assert started["continuous"]["running"] is True and started["continuous"]["fps"] == 50
    start = rig.events.wait_for(1)[0]
    assert (start["type"], start["label"]) == ("start", "hen")
    stopped = rig.command({"action": "stop"})
    assert stopped["continuous"]["running"] is False
    end = rig.events.wait_for(2)[1]  # the hen was in view when it stopped
    assert (end["type"], end["event_id"]) == ("end", start["event_id"])


@pytest.mark.parametrize(
    ("payload", "complaint"),
    [
        (b'{"action": "go"}', "action"),
        (b'{"action": "start", "fps": -1}', "fps"),
        (b'{"action": "start", "speed": 3}', "unknown field(s): speed"),
        (b"[1, 2]", "JSON object"),
        (b'{"action": "start", "reply_topic": "/response/continuous/other"}', "another device"),
    ],
)
def test_a_bad_command_gets_a_clear_error_and_changes_nothing(
    tmp_path: Path, rig_of: Callable[..., Rig], payload: bytes, complaint: str
) -> None:
    rig = rig_of(FolderCamera(write_video(tmp_path / "video", ["hen"])))
    answer = rig.command(payload)
    assert answer["error"]["code"] == "BAD_REQUEST" and complaint in answer["error"]["message"]
    assert rig.classifier.continuous.running is False


def test_a_retained_command_is_never_run(tmp_path: Path, rig_of: Callable[..., Rig]) -> None:
    rig = rig_of(FolderCamera(write_video(tmp_path / "video", ["hen"])))
    rig.bus.deliver(Message(COMMANDS, b'{"action": "start"}', retained=True))
    assert rig.classifier.continuous.running is False and rig.answers.responses == []


def test_a_configuration_update_starts_and_stops_it_live(tmp_path: Path, rig_of: Callable[..., Rig]) -> None:
    rig = rig_of(FolderCamera(write_video(tmp_path / "video", ["hen", "egg"])))
    assert rig.classifier.continuous.running is False
    enabled = rig.config.continuous.model_copy(update={"enabled": True, "fps": 30.0})
    rig.classifier.update_config(rig.config.model_copy(update={"continuous": enabled}))
    assert rig.classifier.continuous.status().running and rig.classifier.continuous.status().fps == 30.0
    wait_until(lambda: rig.classifier.continuous.status().frames > 0, 10, "a frame")
    rig.classifier.update_config(rig.config)
    assert rig.classifier.continuous.running is False


def test_classify_requests_are_answered_while_it_runs_and_frames_are_rate_limited(
    tmp_path: Path, rig_of: Callable[..., Rig]
) -> None:
    rig = rig_of(
        FolderCamera(write_video(tmp_path / "video", ["hen", "egg", "fox"])),
        enabled=True,
        publish_frames=True,
        max_frame_messages_per_s=2,
    )
    responses = ResponseCollector()
    rig.bus.subscribe(f"/response/prediction/{NAME}", responses)
    wait_until(lambda: rig.classifier.continuous.status().frames >= 20, 10, "20 frames")
    rig.bus.publish(f"/request/classify/{NAME}", b'{"request_id": "while-running"}')
    answer = responses.wait_for(1)[0]
    assert answer["request_id"] == "while-running" and answer["predictions"][0]["label"] in ("hen", "egg", "fox")
    frames = rig.classifier.continuous.status().frames
    rig.classifier.continuous.stop()
    assert 1 <= len(rig.frames.responses) < frames  # at most 2 a second, however fast the loop ran
    first = rig.frames.responses[0]
    assert first["frame"] == 0 and len(first["predictions"]) == 3 and first["thing"] == "belt-1"


def test_a_missing_camera_keeps_the_loop_alive_and_stoppable(tmp_path: Path, rig_of: Callable[..., Rig]) -> None:
    rig = rig_of(FolderCamera(tmp_path / "unplugged"), enabled=True)
    wait_until(lambda: rig.classifier.continuous.status().failing is not None, 10, "a failed frame")
    answer = rig.command({"action": "status"})
    assert answer["continuous"]["running"] is True and answer["continuous"]["frames"] == 0
    assert "unplugged cannot be read" in answer["continuous"]["failing"]
    assert rig.command({"action": "stop"})["continuous"]["running"] is False  # not after the 1 s back-off
    assert rig.events.responses == [] and list(FieldDataDir(rig.config.field_data_dir).pending()) == []


class TwoStreams:
    """A camera whose kept image shows a hen and whose lores stream (what inference gets) an egg."""

    def capture(self) -> Frame:
        return Frame(solid_jpeg(COLOURS["hen"]), {"source": "two-streams"}, model_input=solid_jpeg(COLOURS["egg"]))

    def close(self) -> None:
        return None


def test_inference_gets_the_cameras_model_input_and_the_main_image_is_kept(
    tmp_path: Path, rig_of: Callable[..., Rig]
) -> None:
    rig = rig_of(TwoStreams())
    responses = ResponseCollector()
    rig.bus.subscribe(f"/response/prediction/{NAME}", responses)
    rig.bus.publish(f"/request/classify/{NAME}", b'{"save": true}')
    answer = responses.wait_for(1)[0]
    assert answer["predictions"][0]["label"] == "egg"
    kept = written(answer["image"]).read_bytes()
    assert ColourModel().label_of(kept) == "hen"


def test_a_full_store_refuses_frames_with_one_warning_not_one_a_frame(
    tmp_path: Path, rig_of: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    rig = rig_of(FolderCamera(write_video(tmp_path / "video", ["hen"] * 3)))
    rig.store.max_images = 0  # full from the start
    with caplog.at_level(logging.WARNING, logger="fieldlens_classifier.keeping"):
        rig.classifier.continuous.start()
        wait_until(lambda: rig.classifier.continuous.status().frames >= 30, 10, "30 frames")
        rig.classifier.continuous.stop()
    warnings = [r for r in caplog.records if "not keeping image" in r.getMessage()]
    assert len(warnings) == 1 and "field-data cap reached" in warnings[0].getMessage()
    assert rig.events.wait_for(2)[1]["image"]["kept"] is False  # the end event says why


def test_requests_and_the_loop_keep_through_one_keeper(
    tmp_path: Path, rig_of: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    """One store, one policy, one "not kept" log: a request refused by the store the loop filled is
    not a second warning within the minute."""
    rig = rig_of(FolderCamera(write_video(tmp_path / "video", ["hen"] * 3)))
    rig.store.max_images = 0
    responses = ResponseCollector()
    rig.bus.subscribe(f"/response/prediction/{NAME}", responses)
    with caplog.at_level(logging.WARNING, logger="fieldlens_classifier.keeping"):
        rig.classifier.continuous.start()
        wait_until(lambda: rig.classifier.continuous.status().frames >= 3, 10, "3 frames")
        rig.classifier.continuous.stop()
        rig.bus.publish(f"/request/classify/{NAME}", b'{"save": true}')
        image = responses.wait_for(1)[0]["image"]
    assert image["kept"] is False and image["reason"].startswith("disk cap:")
    warnings = [r for r in caplog.records if "not keeping image" in r.getMessage()]
    assert len(warnings) == 1 and image["id"] not in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("fps", "complaint"),
    [
        (1e-11, "one frame a minute"),
        (-5, "0 (as fast as inference allows)"),
        (1e9, "less than or equal"),
        ("5", "valid number"),
        (True, "valid number"),
    ],
)
def test_every_rate_is_bounded_and_typed(
    tmp_path: Path, rig_of: Callable[..., Rig], fps: object, complaint: str
) -> None:
    """{"action": "start", "fps": 1e-11} once killed the loop's thread on every device that heard it."""
    rig = rig_of(FolderCamera(write_video(tmp_path / "video", ["hen"])))
    answer = rig.command({"action": "start", "fps": fps})
    assert answer["error"]["code"] == "BAD_REQUEST" and complaint in answer["error"]["message"]
    assert rig.classifier.continuous.running is False


def test_a_rate_of_0_runs_as_fast_as_inference_allows(tmp_path: Path, rig_of: Callable[..., Rig]) -> None:
    """As `fieldlens serve --fps 0` does; a configured rate is not how fast a conveyor wants it."""
    rig = rig_of(FolderCamera(write_video(tmp_path / "video", ["hen"])), fps=1 / 60)
    answer = rig.command({"action": "start", "fps": 0})
    assert answer["continuous"]["running"] is True and answer["continuous"].get("fps") is None
    wait_until(lambda: rig.classifier.continuous.status().frames >= 10, 10, "frames without a minute's wait")


def test_a_new_rate_takes_effect_at_once(tmp_path: Path, rig_of: Callable[..., Rig]) -> None:
    rig = rig_of(FolderCamera(write_video(tmp_path / "video", ["hen"])))
    rig.command({"action": "start", "fps": 1 / 60})  # one frame, then a minute's wait
    wait_until(lambda: rig.classifier.continuous.status().frames == 1, 10, "the first frame")
    rig.command({"action": "start", "fps": 50})
    wait_until(lambda: rig.classifier.continuous.status().frames >= 10, 10, "frames at the new rate, not in a minute")
    assert rig.classifier.continuous.status().fps == 50


class BrokenCamera:
    """A camera with a bug: not a CameraUnavailableError, which the loop expects and waits out."""

    def capture(self) -> Frame:
        raise ZeroDivisionError("a bug in the camera adapter")

    def close(self) -> None:
        return None


def test_a_bug_stops_the_loop_with_its_reason_and_a_start_runs_it_again(
    tmp_path: Path, rig_of: Callable[..., Rig]
) -> None:
    rig = rig_of(BrokenCamera(), enabled=True)
    wait_until(lambda: not rig.classifier.continuous.running, 10, "the loop to report itself stopped")
    status = rig.command({"action": "status"})["continuous"]
    assert status["running"] is False and "ZeroDivisionError: a bug in the camera adapter" in status["stopped_by"]
    assert rig.command({"action": "start"})["continuous"]["running"] is True  # the thread is still there
    wait_until(lambda: rig.classifier.continuous.status().stopped_by is not None, 10, "the second failure")


class HeldFirst(ColourModel):
    """Holds the first frame's answer until two more frames have been captured, classified and
    answered (or ``hold_s`` passes): only a loop with three frames at the service gets them."""

    def __init__(self, hold_s: float) -> None:
        super().__init__()
        self.hold_s = hold_s
        self.third_answered = threading.Event()
        self.first_saw_the_third: bool | None = None  # False: the hold ran out first
        self._arrivals = itertools.count(1)

    def classify(self, body: bytes, content_type: str = "image/jpeg", top_k: int = 5) -> InferenceResult:
        arrival = next(self._arrivals)
        if arrival == 1:
            self.first_saw_the_third = self.third_answered.wait(self.hold_s)
        try:
            return super().classify(body, content_type, top_k)
        finally:
            if arrival == 3:
                self.third_answered.set()


def test_without_a_rate_three_frames_are_at_the_service_at_once_and_settle_in_capture_order(
    tmp_path: Path, rig_of: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first frame is answered last; the loop still keeps, smooths and counts frames in the order
    the camera took them."""
    settled: list[tuple[int, str]] = []
    settle = ContinuousLoop._settle

    def recording(loop: ContinuousLoop, index: int, started: float, frame: ClassifiedFrame, *rest: Any) -> None:
        settled.append((frame.frame.metadata["frame"], frame.predictions[0].label))
        settle(loop, index, started, frame, *rest)

    monkeypatch.setattr(ContinuousLoop, "_settle", recording)
    video = ["hen", "egg", "fox", "blank"] * 3
    model = HeldFirst(hold_s=10)
    rig = rig_of(FolderCamera(write_video(tmp_path / "video", video), repeat=False), model=model, enabled=True)
    wait_until(lambda: len(settled) == len(video), 10, "the whole video")
    assert model.first_saw_the_third is True
    assert settled == list(enumerate(video))
    assert rig.classifier.continuous.status().frames == len(video)


def test_at_a_rate_one_frame_is_at_the_service_at_a_time(tmp_path: Path, rig_of: Callable[..., Rig]) -> None:
    model = HeldFirst(hold_s=0.3)  # the rate's own pace: the first answer comes when the hold runs out
    rig = rig_of(FolderCamera(write_video(tmp_path / "video", ["hen", "egg", "fox"] * 2)), model=model, fps=60)
    assert rig.command({"action": "start"})["continuous"]["running"] is True
    wait_until(lambda: rig.classifier.continuous.status().frames >= 3, 10, "three frames")
    assert model.first_saw_the_third is False  # the second frame was taken after the first was answered
