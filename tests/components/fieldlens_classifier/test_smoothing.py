from __future__ import annotations

from collections.abc import Callable

import pytest

from fieldlens_classifier.smoothing import FrameResult, Smoother, SmoothingSettings, Transition
from tests.helpers.predictions import ranked
from tests.helpers.video import BLANK, predictions, script


def play(smoother: Smoother, frames: list[str], fps: float = 10.0, confidence: float = 0.85) -> list[Transition]:
    transitions: list[Transition] = []
    for index, label in enumerate(frames):
        transitions += smoother.push(FrameResult(index, index / fps, predictions(label, confidence)))
    return transitions + smoother.flush(len(frames) / fps, len(frames) - 1)


def ids() -> Callable[[], str]:
    counter = iter(range(1000))
    return lambda: f"event-{next(counter)}"


@pytest.mark.parametrize("aggregate", ["mean", "vote"])
def test_each_object_gives_one_start_and_one_end_and_odd_frames_none(aggregate: str) -> None:
    video = script(["hen", "egg", "fox"], frames_each=30, gap=10, odd_every=10)
    smoother = Smoother(SmoothingSettings(aggregate=aggregate), new_id=ids())  # type: ignore[arg-type]
    transitions = play(smoother, video.frames)
    assert [(t.type, t.event.label) for t in transitions] == [
        ("start", "hen"), ("end", "hen"), ("start", "egg"), ("end", "egg"), ("start", "fox"), ("end", "fox"),
    ]  # fmt: skip
    for (label, first, last), (start, end) in zip(
        video.objects, zip(transitions[::2], transitions[1::2], strict=True), strict=True
    ):
        assert start.event.event_id == end.event.event_id
        assert 0 <= start.event.first_frame - first <= 3  # started within 3 frames of the object's first
        assert end.event.last_frame is not None and abs(end.event.last_frame - last) <= 3
        assert end.event.frames >= 25 and end.event.best is not None and video.frames[end.event.best.index] == label


def test_a_single_odd_frame_in_a_blank_gap_starts_nothing() -> None:
    frames = [BLANK] * 5 + ["hen"] + [BLANK] * 5 + ["egg", BLANK, "egg"] + [BLANK] * 5
    assert play(Smoother(SmoothingSettings()), frames) == []


def test_back_to_back_objects_end_and_start_on_the_same_frame() -> None:
    transitions = play(Smoother(SmoothingSettings(), new_id=ids()), ["hen"] * 10 + ["egg"] * 10)
    assert [(t.type, t.event.label) for t in transitions] == [
        ("start", "hen"), ("end", "hen"), ("start", "egg"), ("end", "egg"),
    ]  # fmt: skip
    hen_end, egg_start = transitions[1].event, transitions[2].event
    assert hen_end.last_frame is not None and egg_start.first_frame == hen_end.last_frame + 1


def test_a_model_that_is_never_sure_starts_nothing() -> None:
    assert play(Smoother(SmoothingSettings(min_confidence=0.6)), ["hen"] * 20, confidence=0.5) == []


def test_a_start_reports_its_window_and_an_end_the_mean_window_over_the_event() -> None:
    smoother = Smoother(SmoothingSettings(window_frames=3, hold_frames=2))
    started = []
    for index, confidence in enumerate([0.9, 0.7, 0.8, 0.6]):
        started += smoother.push(FrameResult(index, index, ranked(("hen", confidence), ("egg", 1 - confidence))))
    assert len(started) == 1 and started[0].event.confidence == pytest.approx(0.8)  # (0.9 + 0.7) / 2
    (end,) = smoother.flush(4.0, 3)
    windows = [0.8, 0.8, 0.8, 0.7]  # the window at the start (both held frames), then (0.9+0.7+0.8)/3, (0.7+0.8+0.6)/3
    assert end.event.confidence == pytest.approx(sum(windows) / 4) and end.event.frames == 4
    assert end.event.best is not None and end.event.best.index == 0 and end.event.best_confidence == 0.9


def test_window_s_forgets_frames_older_than_it() -> None:
    """Frames 10 s apart with a 1 s window: each frame is its own window, so hold_frames decides."""
    smoother = Smoother(SmoothingSettings(window_frames=5, window_s=1.0, hold_frames=2))
    first = smoother.push(FrameResult(0, 0.0, predictions("hen")))
    assert first == [] and smoother.leader()[0] == "hen"
    smoother.push(FrameResult(1, 10.0, predictions("egg")))
    label, aggregate = smoother.leader()
    assert label == "egg" and aggregate == pytest.approx(0.85)  # hen fell out of the window


def test_flush_ends_the_event_in_view_once() -> None:
    smoother = Smoother(SmoothingSettings())
    assert [t.type for t in play(smoother, ["hen"] * 5)] == ["start", "end"]
    assert smoother.flush(1.0, 5) == [] and smoother.event is None
