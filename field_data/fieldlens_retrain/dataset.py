"""Dataset manifests: which images, with which labels, in which split. Its hash names the dataset.

Sources:
- ``field``: field images (a local field-data directory, or ``s3://bucket/prefix`` whose
  pairs are downloaded into a cache), labelled by their sidecar's ``label`` or a labels file;
- ``base``: a folder of class folders (``base/<label>/*.jpg``), e.g. the data a model was
  first trained on;
- ``pseudo``: unlabelled field images whose prediction was at least ``pseudo_threshold``
  confident, labelled with that prediction (off by default, and marked as such).

The split is decided per image from its sha256 (``int(sha[:8]) % 100 < val_percent``), so
adding images never moves an old one between train and validation; that is stratified in
expectation, and the class-balance report shows the actual counts.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fieldlens_core.atomic import atomic_write
from fieldlens_core.errors import TrainingError
from fieldlens_core.messages import utc_timestamp
from fieldlens_core.model_package import sha256_file
from fieldlens_core.safe_paths import UnsafePathError, resolve_inside
from fieldlens_fielddata.directory import device_directories
from fieldlens_fielddata.sidecar import Sidecar
from fieldlens_retrain.labels import LabelError, check_known

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
Split = Literal["train", "val"]
Source = Literal["base", "field", "pseudo"]


class ManifestEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(description="Where the image came from: a local path or an S3 key.")
    path: str = Field(description="The local file the trainer reads.")
    sha256: str
    label: str
    split: Split
    source: Source


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    labels: list[str]
    val_percent: int
    entries: list[ManifestEntry]
    created: str = Field(default_factory=utc_timestamp)
    sha256: str = ""

    def digest(self) -> str:
        """The dataset's name: a hash of the label set and every (sha256, label, split, source)."""
        rows = sorted((e.sha256, e.label, e.split, e.source) for e in self.entries)
        canonical = json.dumps({"labels": self.labels, "rows": rows}, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def select(self, split: Split, sources: tuple[Source, ...] = ("base", "field", "pseudo")) -> list[ManifestEntry]:
        return [e for e in self.entries if e.split == split and e.source in sources]

    def balance(self) -> dict[str, dict[str, int]]:
        counts: Counter[tuple[str, str]] = Counter((e.label, e.split) for e in self.entries)
        return {label: {"train": counts[(label, "train")], "val": counts[(label, "val")]} for label in self.labels}


def split_of(sha256: str, val_percent: int) -> Split:
    return "val" if int(sha256[:8], 16) % 100 < val_percent else "train"


def base_images(base: Path) -> Iterator[tuple[Path, str]]:
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                yield path, folder.name


def field_images(
    root: Path, labels: dict[str, str], pseudo_threshold: float | None, trust_sidecar_labels: bool = True
) -> Iterator[tuple[Path, str, Source]]:
    """Labelled field images. A label comes from ``labels``, or from a sidecar the labelling step
    wrote into (``label_source`` import or human) when ``trust_sidecar_labels``: never for sidecars
    a device uploaded (an S3 source), since any device can put any field in them."""
    pairs = (item for directory in device_directories(root) for item in directory.read_all())
    for pair, sidecar in pairs:
        if not isinstance(sidecar, Sidecar) or not pair.image_path.exists():
            continue
        label = labels.get(pair.image_id) or (sidecar.trusted_label if trust_sidecar_labels else None)
        if label:
            yield pair.image_path, label, "field"
        elif pseudo_threshold is not None and sidecar.prediction and sidecar.confidence >= pseudo_threshold:
            yield pair.image_path, sidecar.prediction, "pseudo"


def download_field_data(url: str, cache: Path, s3: Any) -> Path:
    """Mirror the pairs under s3://bucket/prefix into ``cache`` (skipping what is already there)."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            if not key.endswith((".jpg", ".json")):
                continue
            try:
                target = resolve_inside(cache, key)
            except UnsafePathError as exc:  # any device can put a key; none may write outside the cache
                log.warning("skipping s3://%s/%s: %s", bucket, key, exc)
                continue
            if target.exists() and target.stat().st_size == item["Size"]:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, s3.get_object(Bucket=bucket, Key=key)["Body"].read(), durable=False)
    return cache / prefix if prefix else cache


def build_manifest(
    field: Path | None,
    labels: dict[str, str],
    base: Path | None,
    known_labels: list[str] | None,
    new_labels: bool,
    pseudo_threshold: float | None = None,
    val_percent: int = 20,
    trust_sidecar_labels: bool = True,
) -> Manifest:
    found: list[tuple[Path, str, Source]] = []
    if base is not None:
        found += [(path, label, "base") for path, label in base_images(base)]
    if field is not None:
        found += list(field_images(field, labels, pseudo_threshold, trust_sidecar_labels))
    if not found:
        raise LabelError("no labelled images found")
    check_known((label for _, label, _ in found), known_labels, new_labels)
    label_set = sorted({label for _, label, _ in found}) if new_labels or known_labels is None else known_labels
    entries, seen = [], set()
    for path, label, source in found:
        sha256 = sha256_file(path)
        if sha256 in seen:
            continue  # the same photo twice (a copy in base and field): count it once
        seen.add(sha256)
        entries.append(
            ManifestEntry(
                key=str(path),
                path=str(path.absolute()),
                sha256=sha256,
                label=label,
                split=split_of(sha256, val_percent),
                source=source,
            )
        )
    manifest = Manifest(labels=label_set, val_percent=val_percent, entries=entries)
    manifest.sha256 = manifest.digest()
    return manifest


def write_manifest(manifest: Manifest, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, manifest.model_dump_json(indent=1).encode())


def read_manifest(path: Path) -> Manifest:
    try:
        manifest = Manifest.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise TrainingError(f"cannot read the manifest {path}: {exc.strerror or exc}") from None
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise TrainingError(f"{path} is not a dataset manifest: {problem['msg']}") from None
    if manifest.sha256 != manifest.digest():
        raise TrainingError(f"{path}: its sha256 does not match its entries (edited by hand?)")
    return manifest


def balance_report(manifest: Manifest) -> list[str]:
    lines = [f"{'label':<24}{'train':>8}{'val':>8}"]
    for label, counts in manifest.balance().items():
        lines.append(f"{label[:24]:<24}{counts['train']:>8}{counts['val']:>8}")
    sources = Counter(e.source for e in manifest.entries)
    lines.append(
        f"{len(manifest.entries)} images ({', '.join(f'{n} {s}' for s, n in sorted(sources.items()))}); "
        f"dataset {manifest.sha256[:12]}"
    )
    return lines
