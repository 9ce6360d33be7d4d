"""Labels for field images: a CSV (key, label) or a COCO-style classification JSON, in and out.

A key may be an image id, a local path or an S3 key: all name the same image id (the file
stem). Imported labels are written into the sidecars (``label``, ``label_source``), so the
labelled dataset travels with the images. A label outside the current model's label set is
an error unless new labels are allowed (a retrain into a new set of classes).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from fieldlens_core.errors import ExitCode, FieldlensError, NotFoundError
from fieldlens_fielddata.directory import device_directories
from fieldlens_fielddata.sidecar import Sidecar
from fieldlens_retrain.label_studio import read_export


class LabelError(FieldlensError, ValueError):
    exit_code = ExitCode.INVALID_INPUT

    """A labels file that cannot be read, or labels the model does not know."""


def image_id_of(key: str) -> str:
    """``2026/11/20/<id>.jpg``, ``field-data/t/2026/11/20/<id>.json`` and ``<id>`` all give ``<id>``."""
    name = PurePosixPath(key.replace("\\", "/")).name
    return name.rsplit(".", 1)[0] if "." in name else name


def read_labels(path: Path) -> dict[str, str]:
    """image id -> label, from a CSV with a header (key,label), a COCO classification JSON or Label
    Studio's JSON export."""
    try:
        text = path.read_text()
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise NotFoundError(f"no labels file at {path}") from None
        raise LabelError(f"cannot read {path}: {exc}") from None
    if path.suffix.lower() == ".json":
        return _read_json(text, path)
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    if not {"key", "label"} <= {name.strip() for name in header}:
        first = ",".join(header) if header else "empty"
        raise LabelError(
            f"{path}: the first line must be the header key,label (it is: {first[:80]})",
            "Add the line `key,label` at the top: without it the first label is read as the header",
        )
    rows = [{(k or "").strip(): v for k, v in row.items()} for row in reader]
    if not rows:
        raise LabelError(f"{path} holds a header and no labels")
    labels = {}
    for number, row in enumerate(rows, start=2):
        key, label = (row.get("key") or "").strip(), (row.get("label") or "").strip()
        if not key or not label:
            raise LabelError(f"{path}:{number}: a key and a label are both needed")
        labels[image_id_of(key)] = label
    return labels


def _read_json(text: str, path: Path) -> dict[str, str]:
    """A COCO classification file (an object), or Label Studio's JSON export (a list of tasks)."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise LabelError(f"{path} is not JSON: {exc}") from None
    if isinstance(document, list):
        try:
            return read_export(document)
        except (ValueError, KeyError, TypeError) as exc:
            raise LabelError(f"{path} is not a Label Studio export: {exc}") from None
    return _read_coco(document, path)


def _read_coco(document: Any, path: Path) -> dict[str, str]:
    try:
        categories = {c["id"]: c["name"] for c in document["categories"]}
        files = {i["id"]: i["file_name"] for i in document["images"]}
        return {image_id_of(files[a["image_id"]]): categories[a["category_id"]] for a in document["annotations"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise LabelError(f"{path} is not a COCO classification file: {exc}") from None


def check_known(labels: Iterable[str], known: list[str] | None, allow_new: bool) -> None:
    if known is None or allow_new:
        return
    unknown = sorted(set(labels) - set(known))
    if unknown:
        raise LabelError(
            f"labels not in the current model's {len(known)} classes: {', '.join(unknown[:10])}"
            f"{' …' if len(unknown) > 10 else ''}; pass --new-labels to train a model with a new label set"
        )


@dataclass(frozen=True)
class ImportResult:
    labelled: int
    unmatched: list[str]
    """The image ids of the labels file that name no image here, sorted."""


def import_labels(root: Path, labels: dict[str, str], known: list[str] | None, allow_new: bool) -> ImportResult:
    """Write labels into the matching sidecars; says how many were labelled and which keys matched nothing."""
    check_known(labels.values(), known, allow_new)
    count = 0
    matched: set[str] = set()
    for directory in device_directories(root):
        for pair in directory.pairs():
            label = labels.get(pair.image_id)
            if label is not None:
                directory.label(pair.image_id, label, "import")
                matched.add(pair.image_id)
                count += 1
    return ImportResult(count, sorted(set(labels) - matched))


def labelled(root: Path) -> dict[str, str]:
    """image id -> label of every sidecar the labelling step wrote a label into."""
    return {
        pair.image_id: sidecar.trusted_label
        for directory in device_directories(root)
        for pair, sidecar in directory.read_all()
        if isinstance(sidecar, Sidecar) and sidecar.trusted_label
    }


def export_labels(labels: dict[str, str], out: Path, form: str) -> None:
    if form == "csv":
        lines = ["key,label", *(f"{image_id},{label}" for image_id, label in sorted(labels.items()))]
        out.write_text("\n".join(lines) + "\n")
        return
    names = sorted(set(labels.values()))
    category = {name: number for number, name in enumerate(names, start=1)}
    document: dict[str, Any] = {
        "images": [{"id": n, "file_name": f"{i}.jpg"} for n, i in enumerate(sorted(labels), start=1)],
        "categories": [{"id": category[name], "name": name} for name in names],
        "annotations": [
            {"id": n, "image_id": n, "category_id": category[labels[i]]} for n, i in enumerate(sorted(labels), start=1)
        ],
    }
    out.write_text(json.dumps(document, indent=1))
