from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from fieldlens_core.model import LoadedModel, load_model, preprocess
from fieldlens_inference.batcher import BatchRunner
from tests.helpers.images import solid_jpeg
from tests.helpers.tiny_model import make_tiny_package

COLOURS = [(240, 10, 10), (10, 240, 10), (10, 10, 240)]


class CountingModel:
    """Wraps a real loaded model; holds the first run until released, and records batch sizes."""

    def __init__(self, model: LoadedModel) -> None:
        self._model = model
        self.package, self.max_batch = model.package, model.max_batch
        self.batch_sizes: list[int] = []
        self.first_run_entered, self.release_first_run = threading.Event(), threading.Event()

    def predict(self, tensor: np.ndarray) -> np.ndarray:
        logits: np.ndarray = self.predict_batch(tensor)[0]
        return logits

    def predict_batch(self, tensor: np.ndarray) -> np.ndarray:
        if not self.batch_sizes:
            self.first_run_entered.set()
            assert self.release_first_run.wait(5)
        self.batch_sizes.append(len(tensor))
        return self._model.predict_batch(tensor)


def test_requests_waiting_together_share_one_run_and_get_their_own_answers(tmp_path: Path) -> None:
    make_tiny_package(tmp_path)
    model = CountingModel(load_model(tmp_path, "fp32"))
    runner = BatchRunner(max_batch=8)
    spec = model.package.card.input
    tensors = [preprocess(solid_jpeg(COLOURS[i % 3]), spec) for i in range(7)]
    answers: dict[int, int] = {}

    def call(index: int) -> None:
        answers[index] = int(runner.predict(model, tensors[index]).argmax())  # type: ignore[arg-type]

    leader = threading.Thread(target=call, args=(0,))
    leader.start()
    assert model.first_run_entered.wait(5)  # the leader is inside its run of one
    followers = [threading.Thread(target=call, args=(i,)) for i in range(1, 7)]
    for thread in followers:
        thread.start()
    deadline = time.monotonic() + 5
    while len(runner._pending) < 6 and time.monotonic() < deadline:  # all six queue behind the running leader
        threading.Event().wait(0.001)
    model.release_first_run.set()
    for thread in [leader, *followers]:
        thread.join(5)
    assert model.batch_sizes == [1, 6]
    assert answers == {i: i % 3 for i in range(7)}


def test_a_lone_request_runs_on_the_callers_thread_at_once(tmp_path: Path) -> None:
    make_tiny_package(tmp_path)
    model = load_model(tmp_path, "fp32")
    runner = BatchRunner()
    logits = runner.predict(model, preprocess(solid_jpeg(COLOURS[2]), model.package.card.input))
    assert int(logits.argmax()) == 2 and runner.batches_run == 1 and not runner._running


class GatedModel(CountingModel):
    """Holds every run until the test releases it, one by one."""

    def __init__(self, model: LoadedModel) -> None:
        super().__init__(model)
        self.entered = threading.Semaphore(0)
        self.release = threading.Semaphore(0)

    def predict_batch(self, tensor: np.ndarray) -> np.ndarray:
        self.entered.release()
        assert self.release.acquire(timeout=5)
        self.batch_sizes.append(len(tensor))
        return self._model.predict_batch(tensor)


def test_a_leader_returns_with_its_own_result_and_hands_the_rest_on(tmp_path: Path) -> None:
    """Under sustained load the leader once ran everyone's batches before returning its own answer."""
    make_tiny_package(tmp_path)
    model = GatedModel(load_model(tmp_path, "fp32"))
    runner = BatchRunner(max_batch=2)
    tensor = preprocess(solid_jpeg(COLOURS[0]), model.package.card.input)
    returned: list[str] = []

    def call(name: str) -> None:
        runner.predict(model, tensor)  # type: ignore[arg-type]
        returned.append(name)

    first = threading.Thread(target=call, args=("first",))
    first.start()
    assert model.entered.acquire(timeout=5)  # the first caller leads its own batch of one
    others = [threading.Thread(target=call, args=(f"other-{i}",)) for i in range(4)]
    for thread in others:
        thread.start()
    deadline = time.monotonic() + 5
    while len(runner._pending) < 4 and time.monotonic() < deadline:  # all four queue behind it
        threading.Event().wait(0.001)
    model.release.release()  # the first batch ends
    first.join(5)
    assert returned == ["first"]  # back at once, while the next batch has not even been released
    for _ in range(2):  # the other-0 leads the next two batches of two
        assert model.entered.acquire(timeout=5)
        model.release.release()
    for thread in others:
        thread.join(5)
    assert sorted(returned) == ["first", "other-0", "other-1", "other-2", "other-3"]
    assert model.batch_sizes == [1, 2, 2] and not runner._running
