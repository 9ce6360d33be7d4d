"""Field images with chosen predictions, and the labelling page on a thread, for the page's tests."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from fieldlens_cli.main import main
from fieldlens_core.messages import Prediction
from fieldlens_fielddata.directory import new_image_id
from fieldlens_fielddata.sidecar import ModelRef, Observation
from fieldlens_fielddata.store import FieldStore
from fieldlens_samples import fashion
from tests.helpers.field_data import START
from tests.helpers.images import solid_jpeg

LABELS = ["hen", "egg", "fox"]


def keep_predicted(root: Path, tops: list[tuple[str, float]], thing: str = "coop-1") -> list[str]:
    """One kept image per (label, confidence), a minute apart; the rest of the mass on the other labels."""
    store = FieldStore(root, thing)
    ids = []
    for n, (label, confidence) in enumerate(tops):
        when = START + timedelta(minutes=n)
        others = [other for other in LABELS if other != label]
        rest = (1.0 - confidence) / len(others)
        predictions = [Prediction(label=label, confidence=confidence)] + [
            Prediction(label=other, confidence=rest) for other in others
        ]
        seen = Observation(
            prediction=label,
            confidence=confidence,
            predictions=predictions,
            model=ModelRef(name="m", version="1.0.0"),
            timestamp=f"{when:%Y-%m-%dT%H:%M:%S}.000Z",
            reason="least confidence",
        )
        image_id = new_image_id(when)
        store.keep(image_id, when, solid_jpeg(((n * 53) % 256, (n * 97) % 256, 90), (96, 64)), seen, 1 - confidence)
        ids.append(image_id)
    return ids


def keep_fashion(root: Path, per_class: int) -> dict[str, str]:
    """Field photos of three Fashion-MNIST classes, kept as a device keeps them; image id -> truth."""
    if not fashion.DATASET_DIR.exists() and not os.environ.get("CI"):
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make system-deps installs it)")
    images, labels = fashion.load("t10k")
    rng = np.random.default_rng(5)
    chosen = [
        i
        for i in fashion.pick(labels, per_class, rng)
        if fashion.LABELS[int(labels[i])] in ("trouser", "bag", "sandal")
    ]
    store, truth = FieldStore(root, "coop-1"), {}
    start = datetime(2026, 11, 24, tzinfo=UTC)
    for n, index in enumerate(chosen):
        when = start + timedelta(seconds=n)
        image_id = new_image_id(when)
        jpeg = fashion.field_photo(images[index], rng)
        store.keep(image_id, when, jpeg, Observation(prediction="trouser", confidence=0.4, reason="test"))
        truth[image_id] = fashion.LABELS[int(labels[index])]
    return truth


def export_tasks(field: Path | str, out: Path, model: Path, *extra: str) -> None:
    """`fieldlens label export --format label-studio`, as a user runs it."""
    arguments = ["label", "export", "--format", "label-studio", "--field-data", str(field), "--out", str(out)]
    assert main([*arguments, "--model", str(model), *extra]) == 0


def import_export(export: Path, field: Path) -> None:
    """`fieldlens label import EXPORT`, as a user runs it on Label Studio's export (its classes are new)."""
    arguments = ["label", "import", str(export), "--field-data", str(field)]
    assert main(arguments) == 0


def import_csv(field: Path, labels: dict[str, str]) -> None:
    """`fieldlens label import labels.csv`, as a user runs it: writes the CSV beside ``field``."""
    csv = field.parent / "labels.csv"
    csv.write_text("key,label\n" + "".join(f"{image_id},{label}\n" for image_id, label in labels.items()))
    assert main(["label", "import", str(csv), "--field-data", str(field)]) == 0
