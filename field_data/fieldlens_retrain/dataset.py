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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fieldlens_core.atomic import atomic_write
from fieldlens_core.errors import NotFoundError, TrainingError
from fieldlens_core.messages import utc_timestamp
from fieldlens_core.model_package import sha256_file
from fieldlens_fielddata.directory import device_directories
from fieldlens_fielddata.sidecar import Sidecar
from fieldlens_retrain.labels import LabelError, check_label_text, match_labels

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
Split = Literal["train", "val"]
Source = Literal["base", "field", "pseudo"]


class ManifestEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(description="Where the image came from: a local path or an S3 key.")
    path: str = Field(
        description="The file the trainer reads: local, or s3://bucket/key for a manifest built in the bucket."
    )
    sha256: str
    label: str
    split: Split
    source: Source


class Conflict(BaseModel):
    """One photo (by content) given different labels: left out of the dataset until a person decides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str
    keys: list[str] = Field(description="Where the copies are (local paths or S3 keys).")
    labels: list[str] = Field(description="The labels they were given, sorted.")


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    labels: list[str]
    val_percent: int
    entries: list[ManifestEntry]
    created: str = Field(default_factory=utc_timestamp)
    sha256: str = ""
    conflicts: list[Conflict] = Field(default=[], description="Photos left out: their copies disagree.")
    parent_labels: int = Field(default=0, description="How many classes the model it was built for has.")
    dropped_classes: list[str] = Field(default=[], description="That model's classes with no training images.")
    untrained_classes: list[str] = Field(
        default=[], description="Labels with validation images only: left out, the candidate cannot learn them."
    )
    merged_copies: int = Field(
        default=0, description="Labelled copies with the bytes of another, each counted once in its entry."
    )

    def digest(self) -> str:
        """The dataset's name: a hash of the label set and every (sha256, label, split, source)."""
        rows = sorted((e.sha256, e.label, e.split, e.source) for e in self.entries)
        canonical = json.dumps({"labels": self.labels, "rows": rows}, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def select(self, split: Split, sources: tuple[Source, ...] = ("base", "field", "pseudo")) -> list[ManifestEntry]:
        return [e for e in self.entries if e.split == split and e.source in sources]

    def holdout(self) -> list[ManifestEntry]:
        """The images a candidate is judged on: the validation split's field images (the device's
        conditions), or the whole validation split where there are none."""
        return self.select("val", ("field",)) or self.select("val")

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
    a device uploaded (an S3 source), since any device can put any field in them. ``labels`` are by
    the keys of a labels file: each names one image (:func:`~fieldlens_retrain.labels.match_labels`)."""
    labels, _ = match_labels(root, labels)
    pairs = (item for directory in device_directories(root) for item in directory.read_all())
    for pair, sidecar in pairs:
        if not isinstance(sidecar, Sidecar) or not pair.image_path.exists():
            continue
        label = labels.get(pair.key) or (sidecar.trusted_label if trust_sidecar_labels else None)
        if label:
            yield pair.image_path, label, "field"
        elif pseudo_threshold is not None and sidecar.prediction and sidecar.confidence >= pseudo_threshold:
            yield pair.image_path, sidecar.prediction, "pseudo"


def class_set(in_play: set[str], parent_labels: list[str] | None) -> tuple[list[str], list[str]]:
    """The candidate's classes and the parent's classes it drops.

    The classes are the person's: every class with training images, in the parent's order where the
    parent knows them and then the new ones sorted (so a retrain on the same classes keeps the label
    order, and its version bumps the minor number). A parent class with no training images is
    dropped: the candidate could only guess it. From the default ImageNet model that leaves exactly
    the labelled classes; from a model of the person's own, its classes plus the new ones.
    """
    known = parent_labels or []
    kept = [label for label in known if label in in_play]
    return kept + sorted(in_play - set(known)), [label for label in known if label not in in_play]


def build_manifest(
    field: Path | None,
    labels: dict[str, str],
    base: Path | None,
    parent_labels: list[str] | None,
    pseudo_threshold: float | None = None,
    val_percent: int = 20,
    trust_sidecar_labels: bool = True,
) -> Manifest:
    """The dataset of every labelled image, with the classes in play (:func:`class_set`).

    One photo is one entry however many copies there are, so identical images never straddle the
    training and validation splits; copies given different labels are a :class:`Conflict`, left out
    and reported, never silently resolved. A pseudo label never overrides a person's.
    """
    found: list[tuple[Path, str, Source]] = []
    if base is not None:
        found += [(path, label, "base") for path, label in base_images(base)]
    if field is not None:
        found += list(field_images(field, labels, pseudo_threshold, trust_sidecar_labels))
    images = [Found(str(path), str(path.absolute()), sha256_file(path), label, source) for path, label, source in found]
    return manifest_of(images, parent_labels, val_percent)


@dataclass(frozen=True)
class Found:
    """One labelled image before de-duplication: where it came from, where the trainer reads it
    (a local file, or an ``s3://`` URI for a manifest built in the bucket), its content's sha256."""

    key: str
    path: str
    sha256: str
    label: str
    source: Source


def manifest_of(found: list[Found], parent_labels: list[str] | None, val_percent: int = 20) -> Manifest:
    """The manifest of these images, wherever they were found (:func:`build_manifest`'s rules: one
    entry per content, conflicts left out, the split by sha256, the class set)."""
    if not found:
        raise LabelError(
            "no labelled images found",
            "Label some first: `fieldlens label serve` (the page) or `fieldlens label import labels.csv`",
        )
    copies: dict[str, list[Found]] = {}
    for item in found:
        copies.setdefault(item.sha256, []).append(replace(item, label=check_label_text(item.label)))
    entries, conflicts, merged = [], [], 0
    for sha256, group in copies.items():
        given = [item for item in group if item.source != "pseudo"] or group
        if len({item.label for item in given}) > 1:
            keys = sorted(item.key for item in given)
            conflicts.append(Conflict(sha256=sha256, keys=keys, labels=sorted({item.label for item in given})))
            continue
        merged += len(given) - 1
        first = given[0]
        entry = ManifestEntry(
            key=first.key,
            path=first.path,
            sha256=sha256,
            label=first.label,
            split=split_of(sha256, val_percent),
            source=first.source,
        )
        entries.append(entry)
    in_play = {e.label for e in entries if e.split == "train"}
    label_set, dropped = class_set(in_play, parent_labels)
    untrained = sorted({e.label for e in entries} - in_play)
    entries = [e for e in entries if e.label in in_play]
    if not entries:
        raise LabelError(
            "no class has a training image"
            + (f" ({len(conflicts)} photos have conflicting labels)" if conflicts else ""),
            "label more images: a fifth of them go to validation, by their content",
        )
    manifest = Manifest(
        labels=label_set,
        val_percent=val_percent,
        entries=entries,
        conflicts=sorted(conflicts, key=lambda c: c.sha256),
        parent_labels=len(parent_labels) if parent_labels else 0,
        dropped_classes=dropped,
        untrained_classes=untrained,
        merged_copies=merged,
    )
    manifest.sha256 = manifest.digest()
    return manifest


def write_manifest(manifest: Manifest, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, manifest.model_dump_json(indent=1).encode())


def read_manifest(path: Path) -> Manifest:
    try:
        manifest = Manifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise NotFoundError(
            f"no dataset manifest at {path}", "Build one first: `fieldlens dataset build --out FILE`"
        ) from None
    except OSError as exc:
        raise TrainingError(f"cannot read the manifest {path}: {exc.strerror or exc}") from None
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise TrainingError(
            f"{path} is not a dataset manifest: {where + ': ' if where else ''}{problem['msg']}",
            "A manifest is what `fieldlens dataset build --out FILE` writes",
        ) from None
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
    if manifest.untrained_classes:  # else the labels given and the table above do not add up
        lines.append(
            "left out, not in the table: every labelled image of "
            f"{', '.join(manifest.untrained_classes)} went to validation"
        )
    if manifest.merged_copies:  # a camera that sees the same photos keeps the same bytes again and again
        lines.append(
            f"{manifest.merged_copies} labelled images are byte-for-byte copies of others: each photo counts once"
        )
    return lines
