"""Labels for field images: a CSV (key, label) or a COCO-style classification JSON, in and out.

A key may be an image id, ``<thing>/<image id>``, a local path or an S3 key (:func:`image_key_of`).
Below a bucket's mirror two devices' images may share an image id: a bare id that names images of
several things is refused with the candidates, a key with the thing picks its own. Imported
labels are written into the sidecars (``label``, ``label_source``), so the labelled dataset
travels with the images. A label may name a class the current model lacks:
the retrain's candidate then has the labelled classes (:func:`fieldlens_retrain.dataset.class_set`).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from fieldlens_core.errors import ExitCode, FieldlensError, NotFoundError
from fieldlens_core.model_package import label_problem
from fieldlens_fielddata.directory import device_directories, image_key
from fieldlens_fielddata.sidecar import Sidecar
from fieldlens_retrain.label_studio import read_export


class LabelError(FieldlensError, ValueError):
    """A labels file that cannot be read, or a label that cannot be a class name."""

    exit_code = ExitCode.INVALID_INPUT


def image_id_of(key: str) -> str:
    """``2026/11/20/<id>.jpg``, ``field-data/t/2026/11/20/<id>.json`` and ``<id>`` all give ``<id>``."""
    name = PurePosixPath(key.replace("\\", "/")).name
    return name.rsplit(".", 1)[0] if "." in name else name


def image_key_of(key: str) -> str:
    """The image a labels file's key names, as :func:`image_key` gives it: ``<thing>/<id>`` where the
    key says the thing (``<thing>/<id>``, or an S3 key or a mirror's path:
    ``…/<thing>/<yyyy>/<mm>/<dd>/<id>.jpg``), else the bare id (``<id>``, a device's own
    ``<yyyy>/<mm>/<dd>/<id>.jpg``, any other path)."""
    above = [part for part in PurePosixPath(key.replace("\\", "/")).parts[:-1] if part != "/"]
    dated = len(above) >= 4 and [len(p) for p in above[-3:]] == [4, 2, 2] and all(p.isdigit() for p in above[-3:])
    thing = above[-4] if dated else above[0] if len(above) == 1 else None
    return image_key(thing, image_id_of(key))


def read_labels(path: Path) -> dict[str, str]:
    """image key (:func:`image_key_of`) -> label, from a CSV with a header (key,label), a COCO
    classification JSON or Label Studio's JSON export."""
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
        labels[image_key_of(key)] = label
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
        return {image_key_of(files[a["image_id"]]): categories[a["category_id"]] for a in document["annotations"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise LabelError(f"{path} is not a COCO classification file: {exc}") from None


def check_label_text(label: str) -> str:
    """A label as a class name: stripped, and refused (LabelError) where it cannot be one (empty,
    too long, a control character such as NUL): the one rule the model package applies too."""
    problem = label_problem(label)
    if problem is not None:
        shown = label[:40] + ("..." if len(label) > 40 else "")
        raise LabelError(f"the label {shown!r} {problem}")
    return label.strip()


@dataclass(frozen=True)
class ImportResult:
    labelled: int
    unmatched: list[str]
    """The keys of the labels file that name no image here, sorted."""


def match_labels(root: Path, labels: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """A labels file's labels by the image each key names under ``root`` (its :attr:`Pair.key`), and
    the keys that name none, sorted.

    A bare id names the one image with that id; one that images of several things share names none
    of them (LabelError lists them, to be named as ``<thing>/<id>``: a coffee photo was once trained
    as the label of another device's image with its id). A key with its thing names that thing's
    image; in one device's own directory (no thing level, one device) the image with that id."""
    if not labels:
        return {}, []
    keys_of: dict[str, list[str]] = {}  # image id -> the keys of the images with that id
    for directory in device_directories(root):
        for pair in directory.pairs():
            keys_of.setdefault(pair.image_id, []).append(pair.key)
    return match_label_keys(keys_of, labels)


def match_label_keys(keys_of: dict[str, list[str]], labels: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """:func:`match_labels` over the images ``keys_of`` lists (image id -> the keys of the images
    with that id), wherever they were found: a directory, or the sidecars a query found in a bucket."""
    matched: dict[str, str] = {}
    unmatched, ambiguous = [], []
    for key, label in labels.items():
        wanted = image_key_of(key)
        thing, _, image_id = wanted.rpartition("/")
        candidates = [found for found in keys_of.get(image_id, []) if not thing or found in (wanted, image_id)]
        if len(candidates) == 1:
            matched[candidates[0]] = label
        elif candidates:
            ambiguous.append(f"{key} (images {', '.join(sorted(candidates))})")
        else:
            unmatched.append(key)
    if ambiguous:
        listed = "; ".join(ambiguous[:10]) + (" …" if len(ambiguous) > 10 else "")
        raise LabelError(
            f"{len(ambiguous)} keys name images of several devices, which share the image id: {listed}",
            "Name the one you mean as <thing>/<image id> (or by its S3 key)",
        )
    return matched, sorted(unmatched)


def import_labels(root: Path, labels: dict[str, str]) -> ImportResult:
    """Write labels into the matching sidecars (:func:`match_labels`: nothing is written when a key
    is ambiguous); says how many were labelled and which keys matched nothing.

    Any class name is welcome: the person's classes become the candidate's (dataset.class_set)."""
    matched, unmatched = match_labels(root, {key: check_label_text(label) for key, label in labels.items()})
    count = 0
    for directory in device_directories(root):
        for pair in directory.pairs():
            label = matched.get(pair.key)
            if label is not None:
                directory.label(pair.image_id, label, "import")
                count += 1
    return ImportResult(count, unmatched)


def labelled(root: Path) -> dict[str, str]:
    """image key (:attr:`Pair.key`) -> label of every sidecar the labelling step wrote a label into."""
    return {
        pair.key: sidecar.trusted_label
        for directory in device_directories(root)
        for pair, sidecar in directory.read_all()
        if isinstance(sidecar, Sidecar) and sidecar.trusted_label
    }


def export_labels(labels: dict[str, str], out: Path, form: str) -> None:
    if form == "csv":
        lines = ["key,label", *(f"{key},{label}" for key, label in sorted(labels.items()))]
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
