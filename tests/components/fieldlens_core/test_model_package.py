from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fieldlens_core.errors import ModelPackageError
from fieldlens_core.model_package import CARD_FILE, load_package, read_card, resolve_package_dir, sha256_file
from tests.helpers.tiny_model import LABELS, make_tiny_package


def test_a_good_package_loads_with_its_hash(tiny_package: Path) -> None:
    package = load_package(tiny_package)
    assert package.labels == LABELS
    assert package.card.version == "1.0.0"
    assert package.sha256 == sha256_file(tiny_package / "model.onnx")


def test_a_modified_model_fails_its_sha256_check(tiny_package: Path) -> None:
    with (tiny_package / "model.onnx").open("ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ModelPackageError, match="fails its sha256 check"):
        load_package(tiny_package)


def test_missing_pieces_are_named(tiny_package: Path) -> None:
    (tiny_package / "labels.json").unlink()
    with pytest.raises(ModelPackageError, match="missing labels.json"):
        load_package(tiny_package)
    with pytest.raises(ModelPackageError, match="no model card"):
        load_package(tiny_package.parent / "nowhere")


def test_an_unknown_variant_is_refused(tiny_package: Path) -> None:
    with pytest.raises(ModelPackageError, match="no 'int8' variant"):
        load_package(tiny_package, "int8")


def test_labels_must_match_the_card(tiny_package: Path) -> None:
    (tiny_package / "labels.json").write_text(json.dumps(["only-one"]))
    card = json.loads((tiny_package / CARD_FILE).read_text())
    card["files"]["labels.json"] = sha256_file(tiny_package / "labels.json")
    (tiny_package / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelPackageError, match="list of 3 strings"):
        load_package(tiny_package)


def test_an_invalid_card_is_a_package_error(tiny_package: Path) -> None:
    (tiny_package / CARD_FILE).write_text('{"name": "x"}')
    with pytest.raises(ModelPackageError, match="invalid"):
        read_card(tiny_package)


def test_a_current_link_points_at_the_served_package(tmp_path: Path) -> None:
    make_tiny_package(tmp_path / "versions/1.0.0")
    make_tiny_package(tmp_path / "versions/1.1.0", version="1.1.0")
    os.symlink("versions/1.1.0", tmp_path / "current")
    assert resolve_package_dir(tmp_path) == (tmp_path / "versions/1.1.0").resolve()
    assert load_package(tmp_path).card.version == "1.1.0"
