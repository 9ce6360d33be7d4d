"""Configuration of the field-data uploader component."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from fieldlens_core.config import BusSettings, default_thing_name
from fieldlens_core.topics import validate_publish_topic

log = logging.getLogger(__name__)


class UploaderConfig(BusSettings):
    field_data_dir: Path = Field(
        default=Path("fieldlens-data/field-images"),
        title="Field-data directory",
        description="The classifier's field-data directory: every complete pair there without a receipt is queued.",
    )
    thing_name: str = Field(
        default_factory=default_thing_name,
        title="Thing name",
        description="Named in status; the keys' <thing> level is the one each sidecar names.",
    )
    bucket: str | None = Field(
        default=None,
        title="Bucket",
        description="S3 bucket; without one, uploads go to `local_bucket_dir`, which stands in for it.",
    )
    region: str | None = Field(default=None, title="Region", description="AWS region (default: boto3's chain).")
    endpoint_url: str | None = Field(
        default=None, title="Endpoint URL", description="An S3-compatible endpoint (MinIO, a test server)."
    )
    encryption: Literal["AES256", "aws:kms", "none"] = Field(
        default="AES256", title="Encryption", description="Server-side encryption: SSE-S3, SSE-KMS, or none."
    )
    kms_key_id: str | None = Field(default=None, title="KMS key", description="Key id or ARN for aws:kms.")
    local_bucket_dir: Path = Field(
        default=Path("fieldlens-data/bucket"),
        title="Stand-in bucket",
        description="Where uploads go when no bucket is configured.",
    )
    delete_after_upload: bool = Field(
        default=False,
        title="Delete after upload",
        description="Delete the local pair once both objects are confirmed; otherwise leave a receipt beside it "
        "(the store evicts uploaded pairs first when it needs room).",
    )
    concurrency: int = Field(default=8, ge=1, le=64, title="Concurrency", description="Uploads in flight at once.")
    poll_interval_s: float = Field(
        default=2.0, gt=0, le=3600, title="Poll interval", description="How often to look for newly kept images."
    )
    retry_initial_s: float = Field(
        default=1.0, gt=0, title="First retry", description="Backoff bound after the first failure (doubles each time)."
    )
    retry_max_s: float = Field(default=300.0, gt=0, title="Longest retry", description="Backoff bound at most.")
    status_topic: str | None = Field(
        default=None, title="Status topic", description="Where status is published; default /status/field-data/<thing>."
    )
    status_interval_s: float = Field(
        default=30.0, gt=0, le=86400, title="Status interval", description="How often status is published."
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_prefix(cls, data: Any) -> Any:
        """``prefix`` (earlier versions): keys now come from the sidecars, whose prefix is the classifier's
        ``s3Prefix``. A device upgraded with its old configuration must still start."""
        if isinstance(data, dict) and "prefix" in data:
            log.warning("uploader configuration key prefix is ignored: keys come from the classifier's s3Prefix")
            return {k: v for k, v in data.items() if k != "prefix"}
        return data

    @model_validator(mode="after")
    def _check(self) -> UploaderConfig:
        if self.status_topic is not None:
            validate_publish_topic(self.status_topic)
        if self.encryption == "aws:kms" and not self.kms_key_id:
            raise ValueError("encryption aws:kms needs kms_key_id")
        return self

    @property
    def effective_status_topic(self) -> str:
        return self.status_topic or f"/status/field-data/{self.thing_name}"
