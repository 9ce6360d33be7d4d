"""The model package: ``model.onnx`` (+ variants), ``labels.json``, ``model_card.json`` and a known answer.

The card says how to feed the model (input size, resize, normalisation), what it is
(name, semantic version, parent, training-data manifest hash, metrics) and the sha256 of
every file. :func:`load_package` refuses a package whose files do not match their hashes,
so a half-copied or tampered model never reaches ONNX Runtime, and labels that no reply
could carry (too many, too long, repeated, with control characters).

The known answer is ``reference.png`` with ``reference.json`` (each variant's expected top-1
and confidence for it), written by the package writer. It is a file the card hashes rather
than a card field so that a card stays readable by services built before it existed (the
card forbids unknown fields). :mod:`fieldlens_core.model_check` runs all of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fieldlens_core.errors import ModelPackageError
from fieldlens_core.safe_paths import UnsafePathError, plain_name

CARD_FILE = "model_card.json"
LABELS_FILE = "labels.json"
CURRENT_LINK = "current"
REFERENCE_FILE = "reference.json"
Variant = Literal["fp32", "int8"]

MAX_LABELS = 100_000
"""More classes than any head a retrain builds (ImageNet has 1,000); a card claiming millions is a mistake."""
MAX_LABEL_CHARS = 200
"""A class name is a few words; every reply and every page carries it."""
MAX_LABELS_BYTES = 32 << 20
"""labels.json within MAX_LABELS names of MAX_LABEL_CHARS is well under this; it is refused unread above it."""
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Characters that reorder the text around them: a label holding one could show as another on the page."""


class InputSpec(BaseModel):
    """How an image becomes the model's input tensor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(ge=16, le=1024, description="Square input side in pixels (the center crop).")
    resize: int = Field(ge=16, le=2048, description="The shorter image side is resized to this before the crop.")
    mean: tuple[float, float, float] = Field(description="Per-channel mean subtracted from 0-255 RGB values.")
    std: tuple[float, float, float] = Field(description="Per-channel divisor after the mean.")
    layout: Literal["NCHW"] = "NCHW"
    input_name: str = "input"

    @model_validator(mode="after")
    def _crop_fits(self) -> InputSpec:
        if self.resize < self.size:
            raise ValueError("resize must be at least size")
        return self


class ConfidenceBand(BaseModel):
    """The sampling policy's confidence band: keep a frame whose top-1 is below ``low`` or above ``high``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: float = Field(ge=0.0, le=1.0, description="Below this the model is unsure: a hard case worth labelling.")
    high: float = Field(ge=0.0, le=1.0, description="Above this it is nearly always right: an easy positive.")

    @model_validator(mode="after")
    def _ordered(self) -> ConfidenceBand:
        if self.low > self.high:
            raise ValueError("low must not be above high")
        return self


class Calibration(BaseModel):
    """How the model's probabilities were calibrated (temperature scaling) and how well they fit after."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(gt=0.0, description="The exported graph's output is divided by this before softmax.")
    images: int = Field(ge=0, description="Images the temperature was fitted on.")
    images_from: str = Field(description="Which images those are (the split, and who else scores them).")
    ece_bins: int = Field(default=15, ge=1, description="Equal-width confidence bins of the ECE.")
    ece_before: float = Field(ge=0.0, le=1.0, description="Top-1 ECE on those images before the temperature.")
    ece_after: float = Field(ge=0.0, le=1.0, description="Top-1 ECE on the same images after it (fitted there).")
    ece_after_cross_fitted: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Top-1 ECE after a temperature fitted on the other half of the images (two folds): what "
        "an image the fit never saw gets; None below the images two folds need.",
    )
    ece_floor: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="The ECE a perfectly calibrated model would show on as many images at the same "
        "confidences (median of 200 draws): how far below it chance lets ECE go on this many images.",
    )


class OperatingPoint(BaseModel):
    """Where the model should be operated: read by the device, typed, from ``metrics.operating_point``.

    Continuous mode's ``minConfidence`` and the sampling policy's confidence band default to these
    (configuration overrides them), and the smoother sums each class group's probabilities. It lives
    under metrics, not as a card field, so that a card carrying one stays readable by services built
    before it existed (the card forbids unknown fields); :attr:`ModelCard.operating_point` validates it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_threshold: float = Field(
        ge=0.0, le=1.0, description="Continuous mode's minConfidence: the window aggregate that starts an event."
    )
    confidence_band: ConfidenceBand = Field(description="The confidence_band sampling strategy's low and high.")
    class_groups: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Group name -> member labels: near-synonyms whose probabilities continuous mode sums, "
        "reporting the group's name (a label belongs to one group at most).",
    )
    calibration: Calibration | None = Field(default=None, description="None: the probabilities are the model's own.")
    derived: str = Field(description="How the threshold, band and groups were chosen, and on what.")

    @model_validator(mode="after")
    def _groups(self) -> OperatingPoint:
        seen: set[str] = set()
        for name, members in self.class_groups.items():
            problem = label_problem(name)
            if problem is not None:
                raise ValueError(f"class group {name[:40]!r} {problem}")
            if not members:
                raise ValueError(f"class group {name!r} has no members")
            for member in members:
                if member in seen:
                    raise ValueError(f"label {member[:40]!r} is in two class groups")
                seen.add(member)
        return self

    def groups_by_label(self) -> dict[str, str]:
        """Member label -> its group's name (what the smoother reads)."""
        return {member: name for name, members in self.class_groups.items() for member in members}


OPERATING_POINT = "operating_point"
"""The metrics key of the card's :class:`OperatingPoint`."""


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    name: str
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$", description="Semantic version of this model.")
    parent_version: str | None = None
    architecture: str
    input: InputSpec
    num_classes: int = Field(ge=2)
    variants: dict[str, str] = Field(description="Variant name (fp32, int8) -> ONNX file in the package.")
    files: dict[str, str] = Field(description="File name -> sha256 hex digest, for every file but the card.")
    dataset_manifest_sha256: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    created: str | None = None

    @model_validator(mode="after")
    def _variants_are_files(self) -> ModelCard:
        for name in self.files:  # a card names files inside its package, nowhere else
            try:
                plain_name(name)
            except UnsafePathError as exc:
                raise ValueError(exc.message) from None
            if name == CARD_FILE:
                raise ValueError(f"files may not list {CARD_FILE} itself")
        missing = [f for f in [*self.variants.values(), LABELS_FILE] if f not in self.files]
        if missing:
            raise ValueError(f"files lists no hash for {missing}")
        if OPERATING_POINT in self.metrics:
            try:
                OperatingPoint.model_validate(self.metrics[OPERATING_POINT])
            except ValidationError as exc:
                problem = exc.errors()[0]
                where = ".".join(map(str, problem["loc"]))
                raise ValueError(f"metrics.operating_point{'.' + where if where else ''}: {problem['msg']}") from None
        return self

    @property
    def operating_point(self) -> OperatingPoint | None:
        """The model's own operating point, or None for a card without one (written before them)."""
        raw = self.metrics.get(OPERATING_POINT)
        return None if raw is None else OperatingPoint.model_validate(raw)


class ReferenceAnswer(BaseModel):
    """One variant's top-1 for the reference image, as the writer's ONNX Runtime computed it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    confidence: float = Field(ge=0.0, le=1.0)


class Reference(BaseModel):
    """``reference.json``: the known answer every device checks a package against before serving it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(description="Image file in the package (listed in the card's files).")
    content_type: Literal["image/png", "image/jpeg"] = "image/png"
    expected: dict[str, ReferenceAnswer] = Field(description="Variant -> its top-1 for the image.")


@dataclass(frozen=True)
class ModelPackage:
    directory: Path
    card: ModelCard
    labels: list[str]
    model_path: Path
    sha256: str  # of the ONNX file being served
    variant: str


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_package_dir(model_dir: Path) -> Path:
    """A model directory is a package itself, or holds a ``current`` link to one (atomic installs)."""
    link = model_dir / CURRENT_LINK
    return link.resolve() if link.exists() else model_dir


def read_card(package_dir: Path) -> ModelCard:
    path = package_dir / CARD_FILE
    try:
        return ModelCard.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise ModelPackageError(f"no model card at {path}: {exc.strerror}") from None
    except ValidationError as exc:
        raise ModelPackageError(f"model card {path} is invalid: {exc.errors()[0]['msg']}") from None


def verify_files(package_dir: Path, card: ModelCard, names: set[str] | None = None) -> None:
    """The files ``names`` (default: every file the card lists) are there and match their sha256.

    Loading checks what it runs (a variant and the labels); copying or shipping a package checks all.
    """
    for name in sorted(card.files if names is None else names):
        expected = card.files[name]
        path = package_dir / name
        if not path.is_file():
            raise ModelPackageError(f"model package {package_dir} is missing {name}")
        actual = sha256_file(path)
        if actual != expected:
            raise ModelPackageError(f"{path} fails its sha256 check (card {expected[:12]}, file {actual[:12]})")


def load_package(model_dir: Path, variant: str = "fp32") -> ModelPackage:
    """Read and verify a package; raise ModelPackageError with the reason when it is not usable."""
    package_dir = resolve_package_dir(model_dir)
    return package_with_card(package_dir, read_card(package_dir), variant)


def package_with_card(package_dir: Path, card: ModelCard, variant: str = "fp32") -> ModelPackage:
    """The package in ``package_dir`` as ``card`` describes it, verified as :func:`load_package` does.

    The packager loads the package it is staging this way, from the card it has yet to write, so
    that the card is written once, complete (see ``fieldlens_retrain.packaging.write_package``)."""
    if variant not in card.variants:
        raise ModelPackageError(
            f"model {card.name} {card.version} has no {variant!r} variant ({sorted(card.variants)})"
        )
    verify_files(package_dir, card, {card.variants[variant], LABELS_FILE})
    labels = read_labels(package_dir, card)
    model_file = card.variants[variant]
    return ModelPackage(package_dir, card, labels, package_dir / model_file, card.files[model_file], variant)


def read_labels(package_dir: Path, card: ModelCard) -> list[str]:
    """labels.json as a list of ``num_classes`` names a reply can carry; ModelPackageError naming the first fault.

    Bounded because every classify reply and the labelling page carry these names: a 20 MB
    name once loaded and then failed every request as an unrelated INFERENCE_UNAVAILABLE.
    """
    path = package_dir / LABELS_FILE
    hint = "Write the package again (fieldlens retrain, or model build-default): labels come from the labels given"
    if card.num_classes > MAX_LABELS:
        raise ModelPackageError(f"the card claims {card.num_classes} classes; at most {MAX_LABELS} are served", hint)
    if path.stat().st_size > MAX_LABELS_BYTES:
        raise ModelPackageError(f"{LABELS_FILE} is {path.stat().st_size} bytes; at most {MAX_LABELS_BYTES}", hint)
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelPackageError(f"{LABELS_FILE} is not JSON: {exc}", hint) from None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ModelPackageError(f"{LABELS_FILE} must be a list of {card.num_classes} strings", hint)
    if len(labels) != card.num_classes:
        raise ModelPackageError(
            f"{LABELS_FILE} must be a list of {card.num_classes} strings (num_classes); it has {len(labels)}", hint
        )
    point = card.operating_point
    groups = point.class_groups if point else {}
    strangers = sorted({m for members in groups.values() for m in members} - set(labels))
    strangers += [name for name, members in groups.items() if name in labels and name not in members]
    if strangers:
        raise ModelPackageError(
            f"the card's class groups name labels the model does not have, or are named after a label "
            f"they leave out: {strangers[:5]}",
            "Write the package again: class groups are made from the model's own labels",
        )
    seen: set[str] = set()
    for index, label in enumerate(labels):
        problem = label_problem(label)
        if problem is None and label in seen:
            problem = "appears twice"
        if problem is not None:
            shown = label[:40] + ("..." if len(label) > 40 else "")
            raise ModelPackageError(f"{LABELS_FILE}: label {index} {shown!r} {problem}", hint)
        seen.add(label)
    return labels


def label_problem(label: str) -> str | None:
    """Why ``label`` cannot be a class name, or None when it can."""
    if not label.strip():
        return "is empty"
    if len(label) > MAX_LABEL_CHARS:
        return f"is {len(label)} characters long (at most {MAX_LABEL_CHARS})"
    if any(unicodedata.category(c) in ("Cc", "Cs") or c in BIDI_CONTROLS for c in label):
        return "holds a control character"
    return None


def read_reference(package_dir: Path, card: ModelCard) -> Reference | None:
    """The package's known answer (``reference.json``), or None for a package written without one.

    The caller has checked the hashes of both files (the card lists them)."""
    if REFERENCE_FILE not in card.files:
        return None
    try:
        reference = Reference.model_validate_json((package_dir / REFERENCE_FILE).read_bytes())
    except OSError as exc:
        raise ModelPackageError(f"cannot read {package_dir / REFERENCE_FILE}: {exc.strerror}") from None
    except ValidationError as exc:
        raise ModelPackageError(f"{REFERENCE_FILE} is invalid: {exc.errors()[0]['msg']}") from None
    if reference.image not in card.files:
        raise ModelPackageError(f"{REFERENCE_FILE} names {reference.image!r}, which the card does not list")
    missing = sorted(set(card.variants) - set(reference.expected))
    if missing:
        raise ModelPackageError(f"{REFERENCE_FILE} has no expected answer for the {missing} variant")
    return reference


def card_for(package_dir: Path, card_fields: dict[str, Any]) -> ModelCard:
    """The card of ``package_dir`` as it is now: ``card_fields`` with every file's sha256 (not written)."""
    files = {p.name: sha256_file(p) for p in sorted(package_dir.iterdir()) if p.is_file() and p.name != CARD_FILE}
    return ModelCard.model_validate({**card_fields, "files": files})


def write_card(package_dir: Path, card_fields: dict[str, Any]) -> ModelCard:
    """Hash every file in ``package_dir`` into the card and write it atomically (the card goes last).

    Called by the packager only (``fieldlens_retrain.packaging``), once a package: a card written
    in steps was once left half-updated (a report without the card's parent version)."""
    card = card_for(package_dir, card_fields)
    temporary = package_dir / f".{CARD_FILE}.tmp"
    temporary.write_text(card.model_dump_json(indent=2))
    with temporary.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, package_dir / CARD_FILE)
    return card


def current_package(model_dir: Path | None) -> ModelPackage | None:
    """The package installed at ``model_dir`` (its ``current``), or None when there is none."""
    if model_dir is None or not (resolve_package_dir(model_dir) / CARD_FILE).exists():
        return None
    return load_package(model_dir)
