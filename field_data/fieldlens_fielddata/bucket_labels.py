"""Labels for field images that live in a bucket: beside the devices' objects, never in them.

A device writes ``<prefix>/<thing>/<yyyy>/<mm>/<dd>/<id>.jpg`` and ``.json``; its token-exchange
role may write nothing else, and anything it wrote is untrusted (any device can put any field
in a sidecar). A label given on the labelling page (or by ``label import``) for such an image is
one small object under another prefix, which devices cannot write::

    <labels_prefix>/<the image's key without .jpg>.json   {"image_id", "label", "excluded", ...}

The image's key is derived from where the mirror found the pair (its thing's directory, the
prefix the device's role is scoped to), never from the ``s3_key`` its sidecar claims: image ids
are unique by chance only, so two devices may share one, and one device could name another's key.

So labelling never rewrites what a device wrote and never races its uploader (they never write
the same key). :meth:`BucketLabels.mirror` downloads the pairs into a local mirror, drops any
label a device put in its sidecars, and applies the label objects: the mirror's labels are then
exactly the trusted ones, for the page and for ``dataset build``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fieldlens_core.atomic import atomic_write
from fieldlens_core.errors import FieldlensError
from fieldlens_core.safe_paths import UnsafePathError, resolve_inside
from fieldlens_fielddata.directory import IMAGE_SUFFIX, SIDECAR_SUFFIX, device_directories, image_time, s3_key
from fieldlens_fielddata.sidecar import Sidecar

log = logging.getLogger(__name__)

DEFAULT_LABELS_PREFIX = "labels"
MAX_LABEL_OBJECT = 4096


class BucketLabelError(FieldlensError, RuntimeError):
    """A label could not be written to the bucket."""


class LabelRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_id: str
    label: str | None = Field(default=None, max_length=100)
    excluded: bool = False
    labeller: str | None = None
    labelled_at: str | None = None


class BucketLabels:
    def __init__(self, s3: Any, url: str, labels_prefix: str = DEFAULT_LABELS_PREFIX) -> None:
        """``url`` is ``s3://bucket/prefix`` of the devices' field data."""
        self.s3 = s3
        self.url = url
        self.bucket, _, self.prefix = url.removeprefix("s3://").partition("/")
        self.labels_prefix = labels_prefix.strip("/")

    def object_key(self, thing: str | None, image_id: str, suffix: str = IMAGE_SUFFIX) -> str:
        """The key in the bucket of the image ``image_id`` of ``thing`` (its directory in the mirror)."""
        when = image_time(image_id)
        if when is None:
            raise BucketLabelError(f"{image_id!r} is not a field image id")
        return s3_key(self.prefix, thing or "", when, image_id, suffix)

    def key_of(self, thing: str | None, image_id: str) -> str:
        """The key of that image's label object."""
        return f"{self.labels_prefix}/{self.object_key(thing, image_id, SIDECAR_SUFFIX)}"

    def put(self, sidecar: Sidecar, thing: str | None) -> None:
        """Write the sidecar's label (or its absence) as the label object of that image of ``thing``."""
        record = LabelRecord(
            image_id=sidecar.image_id,
            label=sidecar.label,
            excluded=sidecar.excluded,
            labeller=sidecar.labeller,
            labelled_at=sidecar.labelled_at,
        )
        try:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=self.key_of(thing, sidecar.image_id),
                Body=record.model_dump_json().encode(),
                ContentType="application/json",
            )
        except Exception as exc:  # botocore's errors: the page reports them
            raise BucketLabelError(f"the label was not written to s3://{self.bucket}: {exc}") from None

    def mirror(self, cache: Path) -> Path:
        """The pairs under the URL in a local mirror, with exactly the trusted labels; returns its root."""
        root = download_field_data(self.url, cache, self.s3)
        records = self._records()
        for directory in device_directories(root):
            for pair, sidecar in directory.read_all():
                if not isinstance(sidecar, Sidecar):
                    continue
                record = records.get(self.key_of(directory.thing, pair.image_id))
                wanted = (record.label, record.excluded) if record else (None, False)
                if (sidecar.trusted_label, sidecar.excluded) != wanted or (record is None and sidecar.label):
                    labeller = record.labeller if record else None
                    directory.label(pair.image_id, wanted[0], "human", labeller, excluded=wanted[1])
        return root

    def _records(self) -> dict[str, LabelRecord]:
        """Every label object, by its key."""
        records = {}
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.labels_prefix}/"):
            for item in page.get("Contents", []):
                if item["Size"] > MAX_LABEL_OBJECT:
                    log.warning("skipping s3://%s/%s: larger than a label", self.bucket, item["Key"])
                    continue
                body = self.s3.get_object(Bucket=self.bucket, Key=item["Key"])["Body"].read()
                try:
                    record = LabelRecord.model_validate(json.loads(body))
                except (ValueError, ValidationError) as exc:
                    log.warning("skipping s3://%s/%s: not a label: %s", self.bucket, item["Key"], exc)
                    continue
                if item["Key"].endswith(f"/{record.image_id}{SIDECAR_SUFFIX}"):
                    records[item["Key"]] = record
        return records


def download_field_data(url: str, cache: Path, s3: Any) -> Path:
    """Mirror the pairs under s3://bucket/prefix into ``cache`` (skipping what is already there)."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            if not key.endswith((".jpg", ".json")):
                continue
            try:
                target = resolve_inside(cache, key)
            except UnsafePathError as exc:  # any device can put a key; none may write outside the cache
                log.warning("skipping s3://%s/%s: %s", bucket, key, exc)
                continue
            if target.exists() and target.stat().st_size == item["Size"]:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, s3.get_object(Bucket=bucket, Key=key)["Body"].read(), durable=False)
    return cache / prefix if prefix else cache
