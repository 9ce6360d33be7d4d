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
        return self


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
    card = read_card(package_dir)
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


def write_card(package_dir: Path, card_fields: dict[str, Any]) -> ModelCard:
    """Hash every file in ``package_dir`` into the card and write it atomically (the card goes last)."""
    files = {p.name: sha256_file(p) for p in sorted(package_dir.iterdir()) if p.is_file() and p.name != CARD_FILE}
    card = ModelCard.model_validate({**card_fields, "files": files})
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
