"""The second hour: the mistakes a newcomer makes after the demo, typed as a person types them.

Each command runs as a real `fieldlens` subprocess with no AWS credentials, no region and no
metadata service in its environment (exactly a laptop that never ran `aws configure`), and must
end in one line on stderr that says what is wrong and what to do, with the exit code of the
one table (fieldlens_core.errors.ExitCode), and no traceback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fieldlens_core.errors import ExitCode
from fieldlens_core.model_package import sha256_file
from fieldlens_retrain.dataset import split_of
from tests.helpers.field_data import keep_images

pytestmark = pytest.mark.slow

FIELDLENS = str(Path(sys.executable).parent / "fieldlens")
GROUP = "arn:aws:iot:eu-west-1:123456789012:thinggroup/coops"


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def line(self) -> str:
        """The one line on stderr (the test fails if there are more, or a traceback)."""
        lines = self.err.splitlines()
        assert "Traceback" not in self.err, self.err
        assert len(lines) == 1, self.err
        return lines[0]


@pytest.fixture
def person(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A working directory and an environment without any AWS credentials or region."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        HOME=str(tmp_path / "home"),
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",  # botocore would otherwise ask 169.254.169.254 for credentials
    )
    yield tmp_path, env


def fieldlens(person: tuple[Path, dict[str, str]], *arguments: str) -> Run:
    cwd, env = person
    done = subprocess.run(
        [FIELDLENS, *arguments], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    return Run(done.returncode, done.stdout, done.stderr)


def built(cwd: Path) -> Path:
    """A folder shaped like `fieldlens build`'s output: one recipe and its artifact."""
    recipes = cwd / "greengrass-build" / "recipes"
    recipes.mkdir(parents=True)
    artifacts = cwd / "greengrass-build" / "artifacts" / "fieldlens.Classifier" / "0.1.0"
    artifacts.mkdir(parents=True)
    (artifacts / "fieldlens-classifier.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    (recipes / "fieldlens.Classifier-0.1.0.yaml").write_text(
        "RecipeFormatVersion: '2020-01-25'\nComponentName: fieldlens.Classifier\nComponentVersion: 0.1.0\n"
    )
    return cwd / "greengrass-build"


def test_version_and_help_name_the_exit_codes(person: tuple[Path, dict[str, str]]) -> None:
    version = fieldlens(person, "--version")
    assert version.code == 0 and version.out.startswith("fieldlens ")
    help_text = fieldlens(person, "--help").out
    for code in ExitCode:
        assert f"{code.value:>3}  " in help_text


@pytest.mark.parametrize(
    ("broker", "expected"),
    [("127.0.0.1:1883", "mqtt://HOST:PORT"), ("mqtt://127.0.0.1:99999", "port"), ("http://127.0.0.1:1883", "mqtt")],
)
def test_a_mistyped_broker_is_one_line_with_the_form(
    person: tuple[Path, dict[str, str]], broker: str, expected: str
) -> None:
    run = fieldlens(person, "classify", "--broker", broker)
    assert run.code == ExitCode.INVALID_INPUT
    assert run.line.startswith("fieldlens classify: ") and expected in run.line and "mqtt://" in run.line


def test_a_broker_that_is_not_there_is_cannot_connect(person: tuple[Path, dict[str, str]]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: nothing answers there
        run = fieldlens(person, "classify", "--broker", f"mqtt://127.0.0.1:{port}", "--timeout", "3")
    assert run.code == ExitCode.CANNOT_CONNECT and "cannot reach MQTT broker" in run.line


def test_an_unknown_camera_names_the_choices(person: tuple[Path, dict[str, str]]) -> None:
    run = fieldlens(person, "serve", "--camera", "webcam")
    assert run.code == ExitCode.INVALID_INPUT
    assert "'webcam'" in run.line and "folder:DIR, test-pattern, picamera2" in run.line


def test_a_camera_folder_that_is_not_there_is_refused_before_serving(person: tuple[Path, dict[str, str]]) -> None:
    run = fieldlens(person, "serve", "--camera", "folder:no-such-photos")
    assert run.code == ExitCode.INVALID_INPUT
    assert "'no-such-photos', which is not a folder" in run.line and "--camera folder:DIR" in run.line


def test_an_abbreviated_flag_is_refused_with_the_subcommands_usage(person: tuple[Path, dict[str, str]]) -> None:
    run = fieldlens(person, "serve", "--cam", "picamera2")
    assert run.code == ExitCode.INVALID_INPUT
    assert run.err.startswith("usage: fieldlens serve ") and "unrecognized arguments: --cam" in run.err


@pytest.mark.parametrize("command", ["ls", "stats", "sync"])
def test_field_data_commands_on_a_missing_directory_say_so(person: tuple[Path, dict[str, str]], command: str) -> None:
    run = fieldlens(person, "field-data", command, "--field-data", "no-such-dir")
    assert run.code == ExitCode.NOT_FOUND
    assert "no field-data directory at no-such-dir" in run.line and "--field-data DIR" in run.line


@pytest.mark.parametrize(
    "arguments",
    [
        ["label", "export", "--field-data", "s3://fieldlens-bucket/field-data", "--out", "labels.csv"],
        ["dataset", "build", "--from", "s3://fieldlens-bucket/field-data", "--out", "dataset.json"],
        ["field-data", "ls", "--remote", "--bucket", "fieldlens-bucket", "--field-data", "."],
    ],
)
def test_s3_sources_without_credentials_say_how_to_give_them(
    person: tuple[Path, dict[str, str]], arguments: list[str]
) -> None:
    run = fieldlens(person, *arguments)
    assert run.code == ExitCode.NOT_AUTHORISED
    assert "no AWS credentials found" in run.line and "AWS_PROFILE" in run.line


def test_publish_without_a_region_or_credentials(person: tuple[Path, dict[str, str]]) -> None:
    built(person[0])
    no_region = fieldlens(person, "publish", "--bucket", "fieldlens-artifacts")
    assert no_region.code == ExitCode.INVALID_INPUT and "--region" in no_region.line
    no_credentials = fieldlens(person, "publish", "--bucket", "fieldlens-artifacts", "--region", "eu-west-1")
    assert no_credentials.code == ExitCode.NOT_AUTHORISED and "AWS_PROFILE" in no_credentials.line


@pytest.mark.parametrize("verb", [["publish", "--bucket", "b"], ["deploy", "--thing-group", GROUP]])
def test_publish_and_deploy_refuse_a_missing_build_before_calling_aws(
    person: tuple[Path, dict[str, str]], verb: list[str]
) -> None:
    run = fieldlens(person, *verb, "--build", "/nope", "--region", "eu-west-1")
    assert run.code == ExitCode.NOT_FOUND and "no build at /nope" in run.line and "fieldlens build" in run.line
    (person[0] / "empty" / "recipes").mkdir(parents=True)
    empty = fieldlens(person, *verb, "--build", "empty", "--region", "eu-west-1")
    assert empty.code == ExitCode.NOT_FOUND and "holds no component recipe" in empty.line


@pytest.mark.parametrize(
    ("merge", "expected"),
    [
        ("fieldlens.Classifier={name: hens}", "not valid JSON"),
        ("fieldlens.Classifier", "not COMPONENT=JSON"),
        ('fieldlens.Classifier=["hens"]', "must be a JSON object"),
        ('fieldlens.Clasifier={"name": "hens"}', "does not deploy"),
    ],
)
def test_deploy_refuses_a_bad_merge_before_calling_aws(
    person: tuple[Path, dict[str, str]], merge: str, expected: str
) -> None:
    built(person[0])
    run = fieldlens(person, "deploy", "--thing-group", GROUP, "--region", "eu-west-1", "--merge", merge)
    assert run.code == ExitCode.INVALID_INPUT and expected in run.line  # no credentials: it never reached AWS


def test_label_import_says_which_keys_name_no_image(person: tuple[Path, dict[str, str]]) -> None:
    cwd = person[0]
    kept = keep_images(cwd / "field", 2)
    (cwd / "typos.csv").write_text("key,label\nnot-an-image,hen\nnor-this,duck\n")
    none = fieldlens(person, "label", "import", "typos.csv", "--field-data", "field")
    assert none.code == ExitCode.NOT_FOUND
    assert "2 of 2 keys in typos.csv name no image" in none.line and "nor-this, not-an-image" in none.line
    (cwd / "some.csv").write_text(f"key,label\n{kept[0].image_id},hen\nnot-an-image,hen\n")
    some = fieldlens(person, "label", "import", "some.csv", "--field-data", "field")
    assert some.code == 0 and "labelled 1 images" in some.out and "not-an-image" in some.err
    (cwd / "headless.csv").write_text(f"{kept[0].image_id},hen\n")
    headless = fieldlens(person, "label", "import", "headless.csv", "--field-data", "field")
    assert headless.code == ExitCode.INVALID_INPUT and "header key,label" in headless.line


def test_a_label_whose_only_images_went_to_validation_is_named(person: tuple[Path, dict[str, str]]) -> None:
    """`dataset build` once left such a label out of the candidate without a word."""
    cwd = person[0]
    kept = keep_images(cwd / "field", 12)
    splits = {k.image_id: split_of(sha256_file(k.image_path), 20) for k in kept}
    validation = next(image_id for image_id, split in splits.items() if split == "val")
    rows = [f"{image_id},{'duck' if image_id == validation else 'hen'}" for image_id in splits]
    (cwd / "labels.csv").write_text("key,label\n" + "\n".join(rows) + "\n")
    run = fieldlens(person, "dataset", "build", "--from", "field", "--labels", "labels.csv", "--out", "m.json")
    assert run.code == 0 and "manifest written to m.json" in run.out
    assert "labels with validation images only" in run.line and run.line.endswith(": duck; label more images of them")


def test_an_unexpected_failure_is_one_line_that_says_it_is_a_bug(person: tuple[Path, dict[str, str]]) -> None:
    """A corrupt model card is not a traceback either (a model package nobody checked)."""
    cwd = person[0]
    (cwd / "model").mkdir()
    (cwd / "model" / "model_card.json").write_text("{")
    run = fieldlens(person, "model", "install", "model", "--model-dir", "current")
    assert run.code in (ExitCode.FAILED, ExitCode.INVALID_INPUT) and run.line.startswith("fieldlens model install: ")


def test_installing_the_models_directory_names_the_packages_in_it(person: tuple[Path, dict[str, str]]) -> None:
    """The second hour's mistake: `model install fieldlens-data/models` instead of one version of it."""
    cwd = person[0]
    for version in ("1.0.0", "2.0.0"):
        (cwd / "models" / version).mkdir(parents=True)
        (cwd / "models" / version / "model_card.json").write_text("{}")
    run = fieldlens(person, "model", "install", "models", "--model-dir", "current")
    assert run.code == ExitCode.NOT_FOUND and "no model package at models (no model_card.json)" in run.line
    assert "1.0.0, 2.0.0" in run.line and "models/2.0.0" in run.line
    assert not (cwd / "current").exists()
    unpublished = fieldlens(person, "model", "install", "models/3.0.0", "--model-dir", "current")
    assert unpublished.code == ExitCode.NOT_FOUND and "models holds the packages 1.0.0, 2.0.0" in unpublished.line


def test_a_listing_cut_short_by_head_is_quiet(person: tuple[Path, dict[str, str]]) -> None:
    cwd, env = person
    keep_images(cwd / "field", 30)
    done = subprocess.run(
        f"{FIELDLENS} field-data ls --field-data field | head -1", shell=True, cwd=cwd, env=env, capture_output=True
    )
    assert done.returncode == 0 and done.stderr == b"" and done.stdout.startswith(b"image id")


def test_missing_inputs_are_not_found(person: tuple[Path, dict[str, str]]) -> None:
    keep_images(person[0] / "field", 1)
    for arguments, says in (
        (["model", "install", "nope"], "no model package at nope"),
        (["label", "import", "nope.csv", "--field-data", "field"], "no labels file at nope.csv"),
        (["label", "export", "--field-data", "field", "--out", "labels.csv"], "no labelled images"),
        (["dataset", "build", "--from", "nope", "--out", "d.json"], "Pass --from DIR"),
    ):
        run = fieldlens(person, *arguments)
        assert run.code == ExitCode.NOT_FOUND and says in run.line, run.err


def test_deploy_takes_its_region_from_the_groups_arn_and_refuses_a_name(person: tuple[Path, dict[str, str]]) -> None:
    built(person[0])
    named = fieldlens(person, "deploy", "--thing-group", "coops")
    assert named.code == ExitCode.INVALID_INPUT and "is not a thing group ARN" in named.line
    no_credentials = fieldlens(person, "deploy", "--thing-group", GROUP, "--dry-run")  # no --region: the ARN's
    assert no_credentials.code == ExitCode.NOT_AUTHORISED and "no AWS credentials" in no_credentials.line


def test_a_payload_that_is_not_json_is_refused_before_sending(person: tuple[Path, dict[str, str]]) -> None:
    run = fieldlens(person, "classify", "--payload", "{bad", "--broker", "mqtt://127.0.0.1:9")
    assert run.code == ExitCode.INVALID_INPUT and "--payload is not valid JSON" in run.line
