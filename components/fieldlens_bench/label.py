"""`fieldlens bench`, the labelling page: time to the first image, and one label's round trip.

Over the page's real HTTP API (uvicorn on 127.0.0.1) with 100,000 sidecars in the directory
(made once under the data directory and reused). Each repeat starts the page afresh.
"""

from __future__ import annotations

import io
import itertools
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fieldlens_bench.common import Result, Spread, percentile
from fieldlens_bench.runner import BenchOptions
from fieldlens_cli.output import emit
from fieldlens_core.messages import Prediction
from fieldlens_fielddata.directory import new_image_id
from fieldlens_fielddata.sidecar import ModelRef, Observation
from fieldlens_fielddata.store import FieldStore
from fieldlens_labelling.client import PageClient
from fieldlens_labelling.serve import LabelServer, PageOptions
from fieldlens_samples.photos import bundled_photos

LABELS_TIMED = 200
START_TIME = "2026-01-01T00:00:00+00:00"


@dataclass(frozen=True)
class PageRun:
    """One start of the page: how soon it shows an image, indexes everything, and takes a label."""

    first_image_s: float
    index_complete_s: float
    label_p50_ms: float
    label_p95_ms: float


@dataclass(frozen=True)
class LabelResult(Result):
    images: int
    repeats: int
    first_image_s: Spread
    index_complete_s: Spread
    label_p50_ms: Spread
    label_p95_ms: Spread


def field_of(root: Path, count: int) -> Path:
    """``count`` kept images with varied predictions, written once and reused (``.complete`` marks it)."""
    field = root / f"label-bench-{count}"
    if (field / ".complete").exists():
        return field
    photos = list(bundled_photos().values())[:4]
    jpegs = []
    for photo in photos:
        buffer = io.BytesIO()
        photo.convert("RGB").resize((400, 300)).save(buffer, "JPEG", quality=80)
        jpegs.append(buffer.getvalue())
    labels = ["hen", "egg", "fox", "chick", "blank"]
    rng = np.random.default_rng(0)
    store = FieldStore(field, "bench", sync_interval_s=30)
    start = datetime.fromisoformat(START_TIME)
    for n in tqdm(range(count), desc="making sidecars", unit="pair", disable=None):
        when = start + timedelta(seconds=n * 11)
        scores = rng.dirichlet(np.ones(len(labels)) * 0.7)
        ranked = sorted(zip(labels, scores, strict=True), key=lambda pair: -pair[1])
        seen = Observation(
            prediction=ranked[0][0],
            confidence=float(ranked[0][1]),
            predictions=[Prediction(label=label, confidence=float(p)) for label, p in ranked],
            model=ModelRef(name="bench", version="1.0.0"),
            reason="least confidence",
        )
        store.keep(new_image_id(when), when, jpegs[n % len(jpegs)], seen, 1 - float(ranked[0][1]))
    store.close()
    (field / ".complete").write_text("")
    return field


def one_run(field: Path, cache: Path) -> PageRun:
    started = time.perf_counter()
    page = LabelServer(PageOptions(field_data=field, model_dir=None, cache_dir=cache, port=0)).start()
    try:
        client = PageClient(page.base_url, page.token)
        client.state()
        first = next(client.items(limit=50))
        request = urllib.request.Request(
            f"{page.base_url}/api/images/{first['id']}", headers={"Authorization": f"Bearer {page.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
        first_image_s = time.perf_counter() - started
        page.index.loaded.wait()
        indexed_s = time.perf_counter() - started
        items = list(itertools.islice(client.items(limit=LABELS_TIMED), LABELS_TIMED))  # the first page only
        round_trips = []
        for item in items:
            sent = time.perf_counter()
            (updated,) = client.label([item], "hen")
            round_trips.append((time.perf_counter() - sent) * 1000)
            client.label([updated], None)  # leave the directory as it was
    finally:
        page.stop()
    return PageRun(
        first_image_s=first_image_s,
        index_complete_s=indexed_s,
        label_p50_ms=percentile(round_trips, 50),
        label_p95_ms=percentile(round_trips, 95),
    )


def run(options: BenchOptions) -> LabelResult:
    count = options.label_images
    emit(f"\nlabelling page: {count:,} sidecars, the page's HTTP API on 127.0.0.1")
    field = field_of(options.data_dir.absolute() / "bench", count)
    runs = [one_run(field, options.data_dir.absolute() / "bench" / "label-cache") for _ in range(options.repeat)]
    return LabelResult(
        images=count,
        repeats=len(runs),
        first_image_s=Spread.of(r.first_image_s for r in runs),
        index_complete_s=Spread.of(r.index_complete_s for r in runs),
        label_p50_ms=Spread.of(r.label_p50_ms for r in runs),
        label_p95_ms=Spread.of(r.label_p95_ms for r in runs),
    )


def report(r: LabelResult) -> None:
    def cell(s: Spread, unit: str, digits: int) -> str:
        return f"{s.median:.{digits}f} {unit} ({s.min:.{digits}f} to {s.max:.{digits}f})"

    emit("")
    emit(f"| with {r.images:,} sidecars, {r.repeats} runs: median (min to max) | result | goal |")
    emit("| --- | --- | --- |")
    emit(f"| page start -> first image received | {cell(r.first_image_s, 's', 2)} | < 1 s |")
    emit(f"| page start -> every sidecar indexed (the order covers all) | {cell(r.index_complete_s, 's', 1)} | |")
    emit(f"| one label, round trip p50 | {cell(r.label_p50_ms, 'ms', 1)} | |")
    emit(f"| one label, round trip p95 | {cell(r.label_p95_ms, 'ms', 1)} | < 50 ms |")
