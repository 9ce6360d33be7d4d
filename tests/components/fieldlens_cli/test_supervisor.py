"""The supervisor can hold the components to a Pi-sized CPU budget."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from fieldlens_cli.supervisor import ServeOptions, inference_arguments, spawn
from tests.helpers.waiting import wait_until


def options(cpus: tuple[int, ...] | None) -> ServeOptions:
    return ServeOptions(
        broker="mqtt://127.0.0.1:1",
        name="n",
        camera="test-pattern",
        field_data=Path("f"),
        model_dir=Path("m"),
        socket_path=Path("s"),
        service_name="s",
        cpus=cpus,
    )


def test_a_pinned_service_runs_as_many_onnx_threads_as_it_has_cpus() -> None:
    assert inference_arguments(options((0,)))[:2] == ["--threads", "1"]
    assert "--threads" not in inference_arguments(options(None))


def test_a_pinned_child_runs_on_those_cpus_only() -> None:
    cpu = min(os.sched_getaffinity(0))
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: pinning to it changes nothing to observe")
    child = spawn("pinned", "timeit", ["-n", "1", "-r", "1", "import time; time.sleep(60)"], cpus=(cpu,))
    try:

        def running() -> str:  # read afresh each time (psutil caches a process's exe)
            return os.path.basename(os.readlink(f"/proc/{child.process.pid}/exe"))

        wait_until(lambda: "python" in running(), 10, "taskset to exec python under the same pid")
        process = psutil.Process(child.process.pid)
        assert os.sched_getaffinity(child.process.pid) == {cpu}
        assert all(os.sched_getaffinity(thread.id) == {cpu} for thread in process.threads())
    finally:
        child.process.kill()
        child.process.wait()
