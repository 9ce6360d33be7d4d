"""Installing a model package into a model directory, atomically, under a running service.

Layout after the first install::

    <model-dir>/versions/<version>/   one verified package per version
    <model-dir>/current -> versions/<version>

The package is first checked as the service will load it
(:func:`~fieldlens_core.model_check.check_package`: every sha256, the labels, each graph in
ONNX Runtime against the card's input and class count, the known answer), then copied beside
the others under a temporary name, hash-checked again, renamed into place, and only then is
``current`` switched, by renaming a new link over the old one: a package that fails never
becomes current, and the inference service sees either the old package or the new
one, never a half-copied one, and swaps models without failing a request. A model directory
that is a plain package (what `fieldlens model build-default` writes) is first moved into
``versions/`` under its own version.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from fieldlens_core.errors import ModelPackageError
from fieldlens_core.model_check import check_package
from fieldlens_core.model_package import CARD_FILE, CURRENT_LINK, read_card, verify_files

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from fieldlens_core.model_package import ModelCard

VERSIONS_DIR = "versions"


def _verify_copy(staging: Path, checked: ModelCard) -> None:
    """The copy is the package that was checked: the same card hashes, and every file matches them."""
    card = read_card(staging)
    if card.files != checked.files:
        raise ModelPackageError("the package changed while it was being installed", "Install it again")
    verify_files(staging, card)


def _adopt_plain_package(model_dir: Path) -> None:
    """Move a plain package at the top of ``model_dir`` into versions/<version> and link it."""
    card = read_card(model_dir)
    target = model_dir / VERSIONS_DIR / card.version
    target.mkdir(parents=True, exist_ok=True)
    for name in [CARD_FILE, *card.files]:  # the card first: the service stops seeing a package here
        if (model_dir / name).exists():
            os.replace(model_dir / name, target / name)
    _point_current(model_dir, card.version)


def _point_current(model_dir: Path, version: str) -> None:
    temporary = model_dir / f".{CURRENT_LINK}.{os.getpid()}"
    temporary.unlink(missing_ok=True)
    os.symlink(f"{VERSIONS_DIR}/{version}", temporary)
    os.replace(temporary, model_dir / CURRENT_LINK)


def install_package(package: Path, model_dir: Path) -> ModelCard:
    """Install ``package`` and make it current; ModelPackageError (the reason, a hint) if it fails its checks.

    The one install `fieldlens model install` and the labelling page's Install both call.
    """
    checked = check_package(package)  # the card's names are plain names: read_card refuses others
    package, card = checked.directory, checked.card
    model_dir.mkdir(parents=True, exist_ok=True)
    if (model_dir / CARD_FILE).exists() and not (model_dir / CURRENT_LINK).exists():
        _adopt_plain_package(model_dir)
    versions = model_dir / VERSIONS_DIR
    versions.mkdir(exist_ok=True)
    target = versions / card.version
    if target.exists():
        if read_card(target).files != card.files:
            raise ModelPackageError(f"version {card.version} is already installed with different files")
    else:
        staging = Path(tempfile.mkdtemp(prefix=f".{card.version}-", dir=versions))
        try:
            for name in card.files:
                shutil.copy2(package / name, staging / name)
            shutil.copy2(package / CARD_FILE, staging / CARD_FILE)
            _verify_copy(staging, card)
            staging.chmod(0o755)
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    _point_current(model_dir, card.version)
    if card.metrics.get("validated") is False or card.metrics.get("forced"):
        log.warning(
            "%s %s was published by --force (%s): the gate did not pass it",
            card.name,
            card.version,
            "not validated: too few validation images" if card.metrics.get("validated") is False else "forced",
        )
    return card
