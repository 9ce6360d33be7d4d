from __future__ import annotations

import pytest

from fieldlens_classifier.admission import Admission


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def busy_stretch(admission: Admission, clock: Clock, requests: int, interval_s: float) -> None:
    """``requests`` admitted at once, then answered ``interval_s`` apart: the device busy throughout."""
    for _ in range(requests):
        assert admission.admit().admitted
    for _ in range(requests):
        clock.now += interval_s
        admission.finished(interval_s)


def test_a_burst_is_admitted_while_its_expected_wait_fits_the_budget() -> None:
    clock = Clock()
    admission = Admission(budget_s=1.0, max_held=1000, workers=4, clock=clock)
    busy_stretch(admission, clock, 40, 0.1)  # measured: one answer every 100 ms
    assert admission.expected_wait_s(ahead=0) == pytest.approx(0.1, rel=1e-3)
    admitted = [admission.admit() for _ in range(12)]
    assert [d.admitted for d in admitted] == [True] * 10 + [False] * 2  # the 10th waits 10 x 100 ms = the budget
    assert "expected wait is 1100 ms (10 requests ahead), over the 1000 ms budget" in admitted[10].reason


def test_idle_gaps_are_not_mistaken_for_a_slow_device() -> None:
    clock = Clock()
    admission = Admission(budget_s=1.0, max_held=1000, workers=1, clock=clock)
    busy_stretch(admission, clock, 3, 0.1)
    for _ in range(5):  # one request at a time, minutes apart
        clock.now += 300
        assert admission.admit().admitted
        clock.now += 0.1
        admission.finished(0.1)
    assert admission.expected_wait_s(ahead=0) == pytest.approx(0.1)


def test_a_sequential_callers_round_trips_are_not_mistaken_for_capacity() -> None:
    """The caller's next request arrives (the response is out) before the last one is counted
    finished: one request is held between completions, but three of the four workers are idle."""
    clock = Clock()
    admission = Admission(budget_s=5.0, max_held=1000, workers=4, clock=clock)
    assert admission.admit().admitted
    for _ in range(20):
        clock.now += 0.02
        assert admission.admit().admitted  # the next request, before ...
        admission.finished(0.02)  # ... the last is counted finished
    assert admission.expected_wait_s(ahead=199) == pytest.approx(200 * 0.02 / 4)
    assert sum(admission.admit().admitted for _ in range(200)) == 200  # the bench's burst of 200 fits 5 s


def test_before_any_busy_stretch_the_estimate_is_the_service_time_shared_by_the_workers() -> None:
    clock = Clock()
    admission = Admission(budget_s=1.0, max_held=1000, workers=4, clock=clock)
    assert admission.expected_wait_s(ahead=50) == 0.0  # nothing measured: the first requests teach it
    assert admission.admit().admitted
    clock.now += 0.2
    admission.finished(0.2)
    assert admission.expected_wait_s(ahead=3) == pytest.approx(4 * 0.2 / 4)


def test_a_slow_first_interval_is_averaged_in_not_taken_whole() -> None:
    """A burst's first answers come slowest (its own arrivals take the CPU); the estimate starts
    from the service time shared by the workers and moves towards what the busy stretch shows."""
    clock = Clock()
    admission = Admission(budget_s=5.0, max_held=1000, workers=4, clock=clock)
    assert admission.admit().admitted
    clock.now += 0.02
    admission.finished(0.02)  # a lone request: 20 ms of service, 5 ms of capacity per worker
    for _ in range(200):
        assert admission.admit().admitted  # the burst arrives
    for interval in (0.04, 0.016, 0.016):  # the first interval under the storm, then the steady pace
        clock.now += interval
        admission.finished(interval * 4)
    assert 0.005 < admission.expected_wait_s(ahead=0) < 0.04
    assert admission.expected_wait_s(ahead=197) < 5.0  # the rest of the burst still fits the budget


def test_memory_is_bounded_whatever_the_budget() -> None:
    admission = Admission(budget_s=3600.0, max_held=8, workers=2, clock=Clock())
    decisions = [admission.admit() for _ in range(10_000)]
    assert sum(d.admitted for d in decisions) == 8
    assert "8 requests are held, the most this device holds" in decisions[-1].reason
    admission.withdrawn()
    assert admission.admit().admitted
