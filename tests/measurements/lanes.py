"""The inference service's lanes in process, no socket: how many classify calls a second, by how many
callers classify at once (each decodes its JPEG and runs), one run at a time on every core against runs
side by side.

    .venv/bin/python -m tests.measurements.lanes [--model-dir fieldlens-data/model] [--variant fp32]

`one at a time` is LaneRunner(1) on the wide session: every run on all the CPUs, one after another
(what the service did before, without batching). `side by side` is LaneRunner(cores) with the narrow
session: a caller alone runs wide, callers together run narrow, a thread each. The photos are the
bench's camera photos (400x400 JPEGs of scikit-image's samples). Prints calls/s and CPU ms a call,
the median of ``--rounds`` interleaved rounds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fieldlens_bench.harness import camera_photos
from fieldlens_core.model import LoadedModel, load_model, share_one_arena, with_narrow_session
from fieldlens_inference.lanes import LaneRunner, lanes_for


def rate(call: Callable[[int], object], calls: int, callers: int) -> tuple[float, float]:
    """calls/s and CPU ms a call, ``callers`` threads at once."""
    each = calls // callers
    threads = [threading.Thread(target=lambda: [call(i) for i in range(each)]) for _ in range(callers)]
    cpu, wall = time.process_time(), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return each * callers / wall, cpu / (each * callers) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=Path("fieldlens-data/model"))
    parser.add_argument("--variant", choices=["fp32", "int8"], default="fp32")
    parser.add_argument("--calls", type=int, default=240)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cores = lanes_for(0)
    share_one_arena()
    model: LoadedModel = with_narrow_session(load_model(args.model_dir, args.variant))
    with tempfile.TemporaryDirectory() as scratch:
        bodies = [path.read_bytes() for path in sorted(camera_photos(Path(scratch)).iterdir())]
    runners = {"one at a time": LaneRunner(1), "side by side": LaneRunner(cores)}
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}

    def classify_on(runner: LaneRunner) -> Callable[[int], object]:
        return lambda i: runner.classify(model, bodies[i % len(bodies)], 5)

    for _ in range(args.rounds):
        for callers in (1, 2, 4):
            for name, runner in runners.items():
                results.setdefault((name, callers), []).append(rate(classify_on(runner), args.calls, callers))
    print(f"{args.variant}, {cores} CPUs, {args.calls} calls a run, median of {args.rounds} rounds")
    for (name, callers), runs in results.items():
        per_s = statistics.median(run[0] for run in runs)
        cpu = statistics.median(run[1] for run in runs)
        print(f"{callers} at once, {name:14s}: {per_s:6.0f} /s, {cpu:5.2f} ms of CPU a call")


if __name__ == "__main__":
    main()
