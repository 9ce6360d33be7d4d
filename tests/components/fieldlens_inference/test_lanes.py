from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from fieldlens_core.model import BadImageError, Classification, LoadedModel, load_model
from fieldlens_inference.lanes import LaneRunner, lanes_for
from tests.helpers.images import solid_jpeg
from tests.helpers.tiny_model import make_tiny_package

RED = (240, 10, 10)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    folder = tmp_path_factory.mktemp("tiny")
    make_tiny_package(folder)
    return load_model(folder, "fp32")


class Recording:
    """A real model whose runs are recorded (wide or narrow) and can be held: ``before_predict`` runs
    after the decode, before the request asks for a lane, ``before_run`` inside its lane. The bytes
    a request sends are its name; every request classifies the same red image."""

    def __init__(self, model: LoadedModel) -> None:
        self._model = model
        self.runs: list[tuple[str, bool]] = []  # (request name, narrow)
        self.before_predict: Callable[[], object] = lambda: None
        self.before_run: Callable[[str], object] = lambda name: None
        self._names = threading.local()

    def classify(
        self,
        image: bytes,
        k: int,
        content_type: str | None = None,
        predict: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> Classification:
        assert predict is not None
        self._names.name = image.decode()

        def held(tensor: np.ndarray) -> np.ndarray:
            self.before_predict()
            return predict(tensor)

        return self._model.classify(solid_jpeg(RED), k, content_type, predict=held)

    def predict(self, tensor: np.ndarray, narrow: bool = False) -> np.ndarray:
        name = self._names.name
        self.before_run(name)
        self.runs.append((name, narrow))
        return self._model.predict(tensor, narrow)


def classify(runner: LaneRunner, model: Recording, name: str) -> Classification:
    return runner.classify(model, name.encode(), 1, "image/jpeg")  # type: ignore[arg-type]


def in_threads(*targets: Callable[[], object]) -> list[threading.Thread]:
    threads = [threading.Thread(target=target) for target in targets]
    for thread in threads:
        thread.start()
    return threads


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        threading.Event().wait(0.001)


def test_a_request_alone_runs_wide_on_every_lane(model: LoadedModel) -> None:
    recording = Recording(model)
    result = classify(LaneRunner(2), recording, "alone")
    assert recording.runs == [("alone", False)]
    assert result.predictions[0].label == model.labels[0]


def test_requests_in_flight_together_run_narrow_side_by_side(model: LoadedModel) -> None:
    """Both are in flight before either asks for a lane; inside, each waits for the other: only two
    runs at the same time get past the second barrier."""
    recording = Recording(model)
    decoded, running = threading.Barrier(2, timeout=5), threading.Barrier(2, timeout=5)
    recording.before_predict = decoded.wait
    recording.before_run = lambda name: running.wait()
    runner = LaneRunner(2)
    threads = in_threads(lambda: classify(runner, recording, "a"), lambda: classify(runner, recording, "b"))
    for thread in threads:
        thread.join(5)
    assert sorted(recording.runs) == [("a", True), ("b", True)]


def test_a_request_waits_for_a_lane_and_lanes_go_in_arrival_order(model: LoadedModel) -> None:
    recording = Recording(model)
    held = {name: threading.Event() for name in "abcd"}
    started: list[str] = []

    def before_run(name: str) -> None:
        started.append(name)
        assert held[name].wait(5)

    recording.before_run = before_run
    recording.before_predict = threading.Barrier(2, timeout=5).wait  # both in flight before either runs
    runner = LaneRunner(2)
    first = in_threads(lambda: classify(runner, recording, "a"), lambda: classify(runner, recording, "b"))
    wait_for(lambda: len(started) == 2)  # two narrow runs hold both lanes
    recording.before_predict = lambda: None
    later = in_threads(lambda: classify(runner, recording, "c"))
    wait_for(lambda: len(runner._waiting) == 1)
    later += in_threads(lambda: classify(runner, recording, "d"))
    wait_for(lambda: len(runner._waiting) == 2)
    assert len(started) == 2  # both wait while every lane is taken
    held[started[0]].set()
    wait_for(lambda: len(started) == 3)
    assert started[2] == "c"  # the first to wait gets the first lane freed
    held[started[1]].set()
    wait_for(lambda: len(started) == 4)
    assert started[3] == "d"
    for name in "cd":
        held[name].set()
    for thread in first + later:
        thread.join(5)
    assert all(narrow for _, narrow in recording.runs)  # never alone: never wide
    assert runner._free == 2 and runner._in_flight == 0


def test_the_lanes_come_back_after_a_failed_run_or_decode(model: LoadedModel) -> None:
    recording = Recording(model)
    runner = LaneRunner(2)

    def fail(name: str) -> None:
        raise RuntimeError("the run failed")

    recording.before_run = fail
    with pytest.raises(RuntimeError, match="the run failed"):
        classify(runner, recording, "failing")
    with pytest.raises(BadImageError):
        runner.classify(model, b"not an image", 1, "image/jpeg")
    recording.before_run = lambda name: None
    classify(runner, recording, "after")
    assert recording.runs == [("after", False)]  # alone again: wide
    assert runner._free == 2 and runner._in_flight == 0


def test_one_lane_runs_one_request_at_a_time_on_the_served_session(model: LoadedModel) -> None:
    recording = Recording(model)
    inside, release = threading.Semaphore(0), threading.Semaphore(0)

    def before_run(name: str) -> None:
        inside.release()
        assert release.acquire(timeout=5)

    recording.before_run = before_run
    runner = LaneRunner(1)
    threads = in_threads(lambda: classify(runner, recording, "a"), lambda: classify(runner, recording, "b"))
    assert inside.acquire(timeout=5)
    wait_for(lambda: len(runner._waiting) == 1)  # the other waits: one lane, one run
    release.release()
    assert inside.acquire(timeout=5)
    release.release()
    for thread in threads:
        thread.join(5)
    assert [narrow for _, narrow in recording.runs] == [False, False]


def test_lanes_are_the_threads_or_the_cpus_this_process_may_use() -> None:
    import os

    assert lanes_for(3) == 3
    assert lanes_for(0) == len(os.sched_getaffinity(0))
    with pytest.raises(ValueError, match="at least 1"):
        LaneRunner(0)
