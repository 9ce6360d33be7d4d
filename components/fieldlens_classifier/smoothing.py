"""Per-frame predictions in, one start and one end event per object out.

A camera over a conveyor or a perch classifies every frame; one frame is a poor witness (motion
blur, an object half in view, a hand), so decisions are made on a window of frames:

1. **Window**: the last ``window_frames`` frames, and none older than ``window_s`` when set.
   Labels of one class group (``class_groups``, the served model's near-synonyms from its card's
   operating point: "tabby", "tiger cat" and "Egyptian cat" are one cat) enter it as the group,
   their probabilities summed; events are reported under the group's name.
2. **Aggregate**: the mean of the frames' probability vectors (a label a frame did not list
   counts 0 there), or a majority ``vote`` of their top-1 labels (the confidence is then that
   label's mean probability). The window's leader is the label with the highest aggregate.
3. **Hysteresis**: an event starts only when a new leader has held for ``hold_frames``
   consecutive frames with an aggregate of at least ``min_confidence``, and ends only after
   ``hold_frames`` consecutive frames in which its label neither leads the window nor tops the
   newest frame. A single odd frame can do neither: a weak scene (a rocket at 0.5) beside one
   sure odd frame (a cat at 0.9) can lose two windows in a row to it, but each newer frame
   still shows the rocket, so the rocket's event goes on.
4. **Blank**: a leader in ``blank_labels`` (nothing in view) ends the current event like any
   other change, but is never reported as an object.

Invariant: every ``start`` is followed by exactly one ``end`` for the same event id (a change of
leader, a blank, or :meth:`Smoother.flush` when the stream stops), and events never overlap.
The smoother is pure: frames and their times go in, events come out; the continuous loop owns
the camera, the clock and publishing.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from fieldlens_core.messages import Prediction

Aggregate = Literal["mean", "vote"]


@dataclass(frozen=True)
class SmoothingSettings:
    window_frames: int = 3
    window_s: float | None = None
    aggregate: Aggregate = "mean"
    hold_frames: int = 2
    min_confidence: float = 0.5
    blank_labels: frozenset[str] = frozenset({"blank"})
    class_groups: Mapping[str, str] = field(default_factory=dict)
    """Member label -> its group's name (empty: every label is its own)."""


@dataclass(frozen=True)
class FrameResult:
    """One classified frame: its time (seconds, any monotonic origin), its ranked predictions."""

    index: int
    time: float
    predictions: Sequence[Prediction]


@dataclass
class Event:
    """An object in view: from the frame its state began to the frame it ended."""

    event_id: str
    label: str
    confidence: float  # the window's aggregate when the event started, then its mean over the event's frames
    started: float
    first_frame: int
    frames: int = 0
    ended: float | None = None
    last_frame: int | None = None
    best: FrameResult | None = None  # the frame most confident of the label
    best_confidence: float = 0.0
    _confidences: list[float] = field(default_factory=list, repr=False)

    def add(self, frame: FrameResult, window: float) -> None:
        """A frame the label led, with the window's aggregate for it then."""
        self.frames += 1
        self._confidences.append(window)
        self.confidence = sum(self._confidences) / len(self._confidences)
        own = _probability(frame.predictions, self.label)
        if self.best is None or own > self.best_confidence:
            self.best, self.best_confidence = frame, own

    def snapshot(self) -> Event:
        """The event as it is now (a transition reports that, not what the event becomes)."""
        return replace(self, _confidences=list(self._confidences))


@dataclass(frozen=True)
class Transition:
    type: Literal["start", "end"]
    event: Event


def _probability(predictions: Sequence[Prediction], label: str) -> float:
    return next((p.confidence for p in predictions if p.label == label), 0.0)


class Smoother:
    def __init__(self, settings: SmoothingSettings, new_id: Callable[[], str] = lambda: uuid.uuid4().hex) -> None:
        self.settings = settings
        self._new_id = new_id
        self._window: deque[FrameResult] = deque(maxlen=settings.window_frames)
        self._candidate: str | None = None
        self._held = 0  # frames the candidate has led the window, consecutively
        self._held_from: FrameResult | None = None  # the first of them
        self._absent = 0  # frames the event's label has not led the window, consecutively
        self._absent_from: FrameResult | None = None
        self.event: Event | None = None

    def leader(self) -> tuple[str | None, float]:
        """The window's leading label and its aggregate (None for an empty window)."""
        frames = list(self._window)
        if not frames:
            return None, 0.0
        totals: dict[str, float] = {}
        if self.settings.aggregate == "vote":
            for frame in frames:
                top = frame.predictions[0].label
                totals[top] = totals.get(top, 0.0) + 1
            label = max(totals, key=lambda name: (totals[name], -_first_seen(frames, name)))
            return label, sum(_probability(f.predictions, label) for f in frames) / len(frames)
        for frame in frames:
            for prediction in frame.predictions:
                totals[prediction.label] = totals.get(prediction.label, 0.0) + prediction.confidence
        label = max(totals, key=lambda name: (totals[name], -_first_seen(frames, name)))
        return label, totals[label] / len(frames)

    def grouped(self, frame: FrameResult) -> FrameResult:
        """The frame as the window sees it: each class group's members summed under its name, ranked."""
        groups = self.settings.class_groups
        if not groups or not any(p.label in groups for p in frame.predictions):
            return frame
        totals: dict[str, float] = {}
        for prediction in frame.predictions:
            name = groups.get(prediction.label, prediction.label)
            totals[name] = totals.get(name, 0.0) + prediction.confidence
        ranked = sorted(totals.items(), key=lambda item: -item[1])  # stable: ties keep the frame's order
        return replace(
            frame, predictions=[Prediction.model_construct(label=k, confidence=min(1.0, v)) for k, v in ranked]
        )

    def push(self, frame: FrameResult) -> list[Transition]:
        """Take one frame; return the transitions it caused (an end, a start, or both)."""
        if not frame.predictions:
            return []
        frame = self.grouped(frame)
        self._window.append(frame)
        window_s = self.settings.window_s
        while window_s is not None and self._window[0].time < frame.time - window_s:
            self._window.popleft()
        label, aggregate = self.leader()
        if label != self._candidate:
            self._candidate, self._held, self._held_from = label, 0, frame
        self._held += 1
        transitions: list[Transition] = []
        event = self.event
        if event is not None:
            if label == event.label:
                self._absent, self._absent_from = 0, None
                event.add(frame, aggregate)
                return transitions
            if frame.predictions[0].label == event.label:  # the newest frame still shows it: an odd frame lingers
                self._absent, self._absent_from = 0, None
                return transitions
            if self._absent == 0:
                self._absent_from = frame
            self._absent += 1
            if self._absent < self.settings.hold_frames:
                return transitions
            transitions.append(self._end(self._absent_from or frame))
        if (
            label is not None
            and label not in self.settings.blank_labels
            and self._held >= self.settings.hold_frames
            and aggregate >= self.settings.min_confidence
        ):
            transitions.append(self._start(label, aggregate))
        return transitions

    def _start(self, label: str, aggregate: float) -> Transition:
        start = self._held_from
        assert start is not None
        event = Event(self._new_id(), label, aggregate, started=start.time, first_frame=start.index)
        for held in [f for f in self._window if f.index >= start.index]:
            event.add(held, aggregate)
        self.event, self._absent, self._absent_from = event, 0, None
        return Transition("start", event.snapshot())

    def _end(self, first_absent: FrameResult) -> Transition:
        """End the event at the frame before the first one its label stopped leading."""
        assert self.event is not None
        event, self.event = self.event, None
        event.ended, event.last_frame = first_absent.time, first_absent.index - 1
        self._absent, self._absent_from = 0, None
        return Transition("end", event.snapshot())

    def flush(self, now: float, frame_index: int) -> list[Transition]:
        """The stream stopped: end the event in view, if any, and forget the window."""
        transitions = []
        if self.event is not None:
            event, self.event = self.event, None
            event.ended, event.last_frame = now, frame_index
            transitions.append(Transition("end", event.snapshot()))
        self._window.clear()
        self._candidate, self._held, self._held_from = None, 0, None
        self._absent, self._absent_from = 0, None
        return transitions


def _first_seen(frames: list[FrameResult], label: str) -> int:
    """Ties go to the label seen first in the window (stable: no flapping between equals)."""
    return next((n for n, f in enumerate(frames) if any(p.label == label for p in f.predictions)), len(frames))
