"""`fieldlens bench --only continuous`: continuous mode's speed, memory and event accuracy.

Speed and memory: the real components (`fieldlens serve --continuous --fps 0`: as fast as
inference allows) on the local broker, the folder camera cycling through the 400x400 sample
photos. After a warm-up, the loop's own frame counter (asked over MQTT with a status command)
is read at the start and the end of ``--continuous-seconds``; sustained frames per second are
compared with pure ONNX Runtime throughput on a ready tensor, measured in the same run. CPU
per frame is both components' CPU time over the frames; RSS is read at the start and the end.

Event accuracy: a scripted video of real photos (three objects in view one after another for
30 frames each, each frame a different crop and exposure, one odd frame in ten showing
another object, blank gaps of sensor noise), classified frame by frame by the default model
and smoothed with continuous mode's default settings (the same Smoother the loop uses).
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from fieldlens_bench.common import Result
from fieldlens_bench.harness import camera_photos, pure_inference, rss_mb, serve_options
from fieldlens_bench.runner import BenchOptions
from fieldlens_cli.model_commands import ensure_default_model
from fieldlens_cli.output import emit
from fieldlens_cli.requester import Requester
from fieldlens_cli.stack import local_stack
from fieldlens_cli.supervisor import ServeOptions
from fieldlens_core import topics

NAME = "bench"
WARM_UP_FRAMES = 20
# The scripted video: sample photo -> what the default ImageNet model calls it.
OBJECTS = {"coffee": "cup", "motorcycle": "moped", "cameraman": "tripod"}  # cup: the model's class group (its card)
FRAMES_EACH, GAP, ODD_EVERY = 30, 10, 10


@dataclass(frozen=True)
class RssPoint:
    seconds: float
    frames: int
    rss_mb: dict[str, float]
    """Component name -> its RSS."""


@dataclass(frozen=True)
class StreamRun:
    """One run of the loop on the real components: its sustained rate, CPU and memory."""

    fps: float
    frames: int
    seconds: float
    cpu_ms_per_frame: dict[str, float]
    rss_mb_start: dict[str, float]
    rss_mb_end: dict[str, float]
    rss_series: list[RssPoint]
    """Memory over the run, ten points."""


Event = tuple[str, str, int, int | None, int]
"""(start or end, label, first frame, last frame, the frame it was announced at)."""


@dataclass(frozen=True)
class ObjectEvents:
    """What the smoothed events said about one object of the scripted video."""

    object: str
    expected: str
    labels: list[str]
    start_delay_frames: list[int]
    start_announced_after_frames: list[int]
    end_delay_frames: list[int]
    end_announced_after_frames: list[int]


@dataclass(frozen=True)
class EventsResult:
    frames: int
    events: list[Event]
    objects: list[ObjectEvents]
    spurious_starts: int


@dataclass(frozen=True)
class ContinuousResult(Result):
    floor_per_s: float
    runs: list[StreamRun]
    events: EventsResult


def status(requester: Requester) -> tuple[float, dict[str, Any]]:
    pending = requester.send(b'{"action": "status"}')
    answer = pending.wait(10)
    if answer is None or "continuous" not in answer:
        raise RuntimeError(f"no status from continuous mode: {answer}")
    return pending.received_at, answer["continuous"]


def run_stream(options: BenchOptions, model_dir: Path, work: Path) -> StreamRun:
    photos = camera_photos(work / "photos")

    def serving(url: str) -> ServeOptions:
        return serve_options(url, NAME, photos, work, model_dir, options.variant, continuous=True, fps=0.0)

    with local_stack(serving, "bench-continuous", prefer_mosquitto=True) as stack:
        requester = Requester(stack.bus, topics.continuous_request_topic(NAME), topics.continuous_response_topic(NAME))
        requester.listen()
        while status(requester)[1]["frames"] < WARM_UP_FRAMES:
            time.sleep(0.2)  # a bench waits for the warm-up; tests never sleep
        processes = {child.name: psutil.Process(child.pid) for child in stack.children}
        cpu_before = {name: sum(p.cpu_times()[:2]) for name, p in processes.items()}
        memory_before = {child.name: rss_mb(child.pid).rss_mb for child in stack.children}
        started, first = status(requester)
        series = []
        for _ in range(10):
            time.sleep(options.continuous_seconds / 10)
            at, now = status(requester)
            memory = {child.name: round(rss_mb(child.pid).rss_mb, 1) for child in stack.children}
            series.append(RssPoint(seconds=round(at - started, 1), frames=now["frames"], rss_mb=memory))
        ended, last = at, now
        frames = last["frames"] - first["frames"]
        cpu_ms = {name: (sum(p.cpu_times()[:2]) - cpu_before[name]) * 1000 / frames for name, p in processes.items()}
    return StreamRun(
        fps=frames / (ended - started),
        frames=frames,
        seconds=ended - started,
        cpu_ms_per_frame=cpu_ms,
        rss_mb_start=memory_before,
        rss_mb_end=series[-1].rss_mb,
        rss_series=series,
    )


def scripted_video(seed: int = 0, objects: dict[str, str] = OBJECTS) -> list[bytes]:
    """The JPEG frames, in order: ``objects`` (sample photo -> expected label) one after another."""
    from PIL import Image, ImageEnhance, ImageOps

    from fieldlens_samples.photos import sample_photos

    rng = np.random.default_rng(seed)
    photos = {name: ImageOps.fit(image.convert("RGB"), (400, 400)) for name, image in sample_photos().items()}

    def view(name: str | None) -> bytes:
        if name is None:
            noise = np.full((400, 400, 3), 90.0) + rng.normal(0, 12, (400, 400, 3))
            image = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8))
        else:
            side = int(400 * rng.uniform(0.8, 1.0))
            x, y = (int(v) for v in rng.integers(0, 400 - side + 1, 2))
            crop = photos[name].crop((x, y, x + side, y + side)).resize((400, 400))
            image = ImageEnhance.Brightness(crop).enhance(rng.uniform(0.7, 1.3))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        return buffer.getvalue()

    shows: list[str | None] = [None] * GAP
    names = list(objects)
    for n, name in enumerate(names):
        other = names[(n + 1) % len(names)]
        shows += [other if i % ODD_EVERY == 4 else name for i in range(FRAMES_EACH)] + [None] * GAP
    return [view(name) for name in shows]


def run_events(model_dir: Path, variant: str, shown: dict[str, str] = OBJECTS, seed: int = 0) -> EventsResult:
    """The scripted video of ``shown`` (sample photo -> expected label) through the model and continuous
    mode's default settings for it (its card's operating point, as a device runs it)."""
    from fieldlens_classifier.config import ContinuousConfig
    from fieldlens_classifier.smoothing import FrameResult, Smoother
    from fieldlens_core.model import load_model

    model = load_model(model_dir, variant)
    frames = scripted_video(seed, shown)
    smoother = Smoother(ContinuousConfig().smoothing(model.package.card.operating_point))
    transitions = []  # (the frame it was announced at, the transition)
    for index, jpeg in enumerate(frames):
        ranked = model.classify(jpeg, 10, "image/jpeg").predictions
        pushed = smoother.push(FrameResult(index, index / 5, ranked))
        transitions += [(index, t) for t in pushed]
    transitions += [(len(frames) - 1, t) for t in smoother.flush(len(frames) / 5, len(frames) - 1)]
    spans = []
    start = GAP
    for name in shown:
        spans.append((name, start, start + FRAMES_EACH - 1))
        start += FRAMES_EACH + GAP
    events: list[Event] = [
        (t.type, t.event.label, t.event.first_frame, t.event.last_frame, at) for at, t in transitions
    ]
    matched = [e for e in events if e[0] == "start" and any(first - 3 <= e[2] <= last for _, first, last in spans)]
    objects = []
    for name, first, last in spans:
        starts = [e for e in events if e[0] == "start" and first - 3 <= e[2] <= last]
        ends = [e for e in events if e[0] == "end" and e[2] in [s[2] for s in starts]]
        objects.append(
            ObjectEvents(
                object=name,
                expected=shown[name],
                labels=[s[1] for s in starts],
                start_delay_frames=[s[2] - first for s in starts],
                start_announced_after_frames=[s[4] - first for s in starts],
                end_delay_frames=[(e[3] or 0) - last for e in ends],
                end_announced_after_frames=[e[4] - last for e in ends],
            )
        )
    spurious = sum(1 for e in events if e[0] == "start") - len(matched)
    return EventsResult(frames=len(frames), events=events, objects=objects, spurious_starts=spurious)


def run(options: BenchOptions) -> ContinuousResult:
    model_dir = options.data_dir.absolute() / "model"
    ensure_default_model(model_dir)
    emit(f"\ncontinuous mode: {options.repeat} runs of {options.continuous_seconds:.0f} s, as fast as inference allows")
    before = pure_inference(model_dir, options.variant, 200)
    options.data_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for _ in range(options.repeat):
        with tempfile.TemporaryDirectory(prefix=".bench-", dir=options.data_dir) as scratch:
            runs.append(run_stream(options, model_dir, Path(scratch)))
            emit(f"  {runs[-1].fps:.1f} frames/s over {runs[-1].frames} frames")
    after = pure_inference(model_dir, options.variant, 200)
    floor = max(before.throughput_per_s, after.throughput_per_s)  # the faster floor: never flattering
    return ContinuousResult(floor_per_s=floor, runs=runs, events=run_events(model_dir, options.variant))


def report(r: ContinuousResult) -> None:
    fps = sorted(run.fps for run in r.runs)
    median = statistics.median(fps)
    emit("")
    emit("| measure | min | median | max |")
    emit("| --- | --- | --- | --- |")
    emit(f"| sustained frames/s | {fps[0]:.1f} | {median:.1f} | {fps[-1]:.1f} |")
    ratios = [f / r.floor_per_s for f in fps]
    emit(f"| / pure inference ({r.floor_per_s:.1f}/s) | {ratios[0]:.0%} | {statistics.median(ratios):.0%} | "
         f"{ratios[-1]:.0%} |")  # fmt: skip
    for name in r.runs[0].cpu_ms_per_frame:
        values = sorted(run.cpu_ms_per_frame[name] for run in r.runs)
        emit(f"| CPU ms/frame, {name} | {values[0]:.1f} | {statistics.median(values):.1f} | {values[-1]:.1f} |")
    for name in r.runs[0].rss_mb_start:
        start = max(run.rss_mb_start[name] for run in r.runs)
        end = max(run.rss_mb_end[name] for run in r.runs)
        seconds = r.runs[0].seconds
        emit(f"RSS of {name}: {start:.0f} MB after the warm-up, {end:.0f} MB {seconds:.0f} s later (largest of runs)")
    emit("RSS over the first run (s, frames, MB): " + "; ".join(
        f"{p.seconds:.0f} s {p.frames} " + "/".join(f"{mb:.0f}" for mb in p.rss_mb.values())
        for p in r.runs[0].rss_series
    ))  # fmt: skip
    emit("")
    events = r.events
    emit(
        f"scripted video, {events.frames} frames: {len(events.events)} events, "
        f"{events.spurious_starts} started outside an object's frames"
    )
    emit("| object | expected label | events started | start (announced) | end (announced), frames after the object |")
    emit("| --- | --- | --- | --- | --- |")
    for o in events.objects:
        starts = zip(o.start_delay_frames, o.start_announced_after_frames, strict=True)
        ends = zip(o.end_delay_frames, o.end_announced_after_frames, strict=True)
        emit(
            f"| {o.object} | {o.expected} | {', '.join(o.labels) or 'none'} | "
            f"{', '.join(f'{a} ({b})' for a, b in starts)} | {', '.join(f'{a} ({b})' for a, b in ends)} |"
        )
