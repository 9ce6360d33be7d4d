"""Where uploads go: an S3 bucket, or, with no bucket configured, a local directory standing in for one.

Both take the same calls, so the uploader and its tests do not care which it is.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Protocol

from fieldlens_core.atomic import atomic_write

Encryption = Literal["AES256", "aws:kms", "none"]


def sha256_b64(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode()


class Destination(Protocol):
    description: str

    def put(self, key: str, body: bytes, content_type: str, metadata: dict[str, str]) -> None:
        """Store ``body`` at ``key``, verified by its SHA-256; raises on failure."""

    def keys(self, prefix: str) -> Iterator[tuple[str, int]]:
        """(key, size) of everything under ``prefix``."""


class S3Destination:
    def __init__(
        self, client: Any, bucket: str, encryption: Encryption = "AES256", kms_key_id: str | None = None
    ) -> None:
        self._client = client
        self.bucket = bucket
        self._encryption = encryption
        self._kms_key_id = kms_key_id
        self.description = f"s3://{bucket}"

    def put(self, key: str, body: bytes, content_type: str, metadata: dict[str, str]) -> None:
        arguments: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": body,
            "ContentType": content_type,
            "Metadata": metadata,
            "ChecksumSHA256": sha256_b64(body),  # S3 refuses the object if the bytes it got differ
            "ChecksumAlgorithm": "SHA256",  # and keeps it: HeadObject gives it to a dataset built in the bucket
        }
        if self._encryption != "none":
            arguments["ServerSideEncryption"] = self._encryption
        if self._encryption == "aws:kms" and self._kms_key_id:
            arguments["SSEKMSKeyId"] = self._kms_key_id
        self._client.put_object(**arguments)

    def keys(self, prefix: str) -> Iterator[tuple[str, int]]:
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"], int(item["Size"])


class LocalDirectoryDestination:
    """A directory laid out like the bucket: for the demo and for devices with no bucket yet."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()
        self.description = f"local directory {self.root} (no bucket configured)"

    def put(self, key: str, body: bytes, content_type: str, metadata: dict[str, str]) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, body)

    def keys(self, prefix: str) -> Iterator[tuple[str, int]]:
        base = self.root / prefix if prefix else self.root
        if not base.exists():
            return
        for path in sorted(p for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")):
            yield path.relative_to(self.root).as_posix(), path.stat().st_size
