"""Field-data pairs for tests, written by the real FieldStore."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fieldlens_fielddata.directory import new_image_id
from fieldlens_fielddata.sidecar import ModelRef, Observation
from fieldlens_fielddata.store import FieldStore, KeptImage
from tests.helpers.images import solid_jpeg
from tests.helpers.waiting import wait_until

START = datetime(2026, 11, 20, 8, 0, 0, tzinfo=UTC)


def keep_images(root: Path, count: int, thing: str = "coop-1", start: datetime = START) -> list[KeptImage]:
    store = FieldStore(root, thing)
    kept = []
    for index in range(count):
        when = start + timedelta(minutes=index)
        seen = Observation(prediction="hen", confidence=0.8, request_id=f"r{index}", model=ModelRef(version="1.0.0"))
        kept.append(
            store.keep(new_image_id(when), when, solid_jpeg(((index * 37) % 256, (index * 11) % 256, 40)), seen, 0.2)
        )
    return kept


def written(image: Mapping[str, Any], timeout_s: float = 10.0) -> Path:
    """The path of a kept image from a response, once its pair is on disk: the classifier
    publishes the response first and writes the image after (the sidecar last)."""
    path = Path(str(image["path"]))
    wait_until(path.with_suffix(".json").exists, timeout_s, f"{path.name} written")
    return path
