"""The retrain loop through the `fieldlens` command line (slow: real training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fieldlens_cli.main import main
from fieldlens_core.errors import ExitCode
from fieldlens_core.model_package import resolve_package_dir
from tests.helpers.colour_photos import write_class_folders
from tests.helpers.field_data import keep_images

pytestmark = pytest.mark.slow


def test_label_dataset_retrain_install(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_class_folders(tmp_path / "base", 6)
    kept = keep_images(tmp_path / "field", 3)
    (tmp_path / "labels.csv").write_text("key,label\n" + "".join(f"{k.image_id}.jpg,red\n" for k in kept))
    nothing = str(tmp_path / "no-model")

    assert (
        main(
            [
                "label",
                "import",
                str(tmp_path / "labels.csv"),
                "--field-data",
                str(tmp_path / "field"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "dataset",
                "build",
                "--from",
                str(tmp_path / "field"),
                "--base",
                str(tmp_path / "base"),
                "--model",
                nothing,
                "--out",
                str(tmp_path / "m.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "21 images (18 base, 3 field)" in out
    retrain = ["retrain", "--dataset", str(tmp_path / "m.json"), "--out", str(tmp_path / "models")]
    retrain += ["--model", nothing, "--epochs", "60", "--cache", str(tmp_path / "cache")]
    assert main(retrain) == ExitCode.REJECTED  # 21 photos: a handful for validation, too few to judge
    judged = capsys.readouterr().out
    assert "not enough to judge" in judged and "label about" in judged
    assert main([*retrain, "--min-val-per-class", "1", "--min-val-images", "3"]) == 0
    assert "no current model to compare with" in capsys.readouterr().out
    assert main(["model", "install", str(tmp_path / "models/1.0.1"), "--model-dir", str(tmp_path / "model")]) == 0
    assert resolve_package_dir(tmp_path / "model").name == "1.0.1"  # 1.0.0 was the candidate not judged

    # a class the installed model does not know is welcome: the next candidate learns it
    (tmp_path / "more.csv").write_text(f"key,label\n{kept[0].image_id},purple\n")
    assert main(["label", "import", str(tmp_path / "more.csv"), "--field-data", str(tmp_path / "field")]) == 0
    assert json.loads(kept[0].sidecar_path.read_text())["label"] == "purple"
    (tmp_path / "more.csv").write_text(f"key,label\n{kept[1].image_id},pur\u202eple\n")
    assert main(["label", "import", str(tmp_path / "more.csv"), "--field-data", str(tmp_path / "field")]) == 2
    assert json.loads(kept[1].sidecar_path.read_text())["label"] == "red"
    assert (
        main(
            [
                "label",
                "export",
                "--field-data",
                str(tmp_path / "field"),
                "--format",
                "coco",
                "--out",
                str(tmp_path / "labels.json"),
            ]
        )
        == 0
    )
    coco = json.loads((tmp_path / "labels.json").read_text())
    assert len(coco["annotations"]) == 3 and {c["name"] for c in coco["categories"]} == {"red", "purple"}


@pytest.mark.parametrize(
    ("content", "says", "code"),
    [
        (b"{not json", "is not a dataset manifest", 2),
        (b'{"entries": []}', "is not a dataset manifest: labels: Field required", 2),
        (None, "no dataset manifest at", 7),
    ],
)
def test_a_bad_manifest_is_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, says: str, code: int
) -> None:
    from fieldlens_cli.main import main

    manifest = tmp_path / "dataset.json"
    if content is not None:
        manifest.write_bytes(content)
    assert main(["retrain", "--dataset", str(manifest), "--out", str(tmp_path / "out")]) == code
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("fieldlens retrain: ") and says in line and line.endswith(f"(exit {code})")
    assert "fieldlens dataset build --out FILE" in line


def test_retrain_publish_checks_the_bucket_before_training(
    aws: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Minutes of training, then "no such bucket", is the mistake this saves."""
    write_class_folders(tmp_path / "base", 3)
    assert (
        main(
            [
                "dataset",
                "build",
                "--from",
                str(tmp_path),
                "--base",
                str(tmp_path / "base"),
                "--out",
                str(tmp_path / "m.json"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    arguments = ["retrain", "--dataset", str(tmp_path / "m.json"), "--out", str(tmp_path / "models")]
    code = main([*arguments, "--publish", "--bucket", "no-such-bucket", "--region", "eu-west-1"])
    (line,) = capsys.readouterr().err.splitlines()
    assert code == ExitCode.NOT_FOUND and "no-such-bucket" in line, line
    assert not (tmp_path / "models").exists()  # nothing was trained
