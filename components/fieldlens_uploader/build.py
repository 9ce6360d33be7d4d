"""The uploader's adapters, built from its configuration: the component and `fieldlens field-data` share them.

Credentials come from boto3's default chain: on a Greengrass core that is the token exchange
service (the recipe depends on aws.greengrass.TokenExchangeService), elsewhere the usual
environment, profile or instance role.
"""

from __future__ import annotations

import logging
from typing import Any

from fieldlens_fielddata.destination import Destination, LocalDirectoryDestination, S3Destination
from fieldlens_fielddata.uploader import Uploader
from fieldlens_uploader.config import UploaderConfig

log = logging.getLogger(__name__)


def s3_client(config: UploaderConfig) -> Any:
    import boto3
    from botocore.config import Config

    # botocore retries quick blips itself; a longer outage is the drain loop's backoff
    settings = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30)
    return boto3.client("s3", region_name=config.region, endpoint_url=config.endpoint_url, config=settings)


def build_destination(config: UploaderConfig) -> Destination:
    if config.bucket is None:
        destination = LocalDirectoryDestination(config.local_bucket_dir)
        log.warning("no bucket configured: uploads go to %s, which stands in for one", destination.root)
        return destination
    return S3Destination(s3_client(config), config.bucket, config.encryption, config.kms_key_id)


def build_uploader(config: UploaderConfig) -> Uploader:
    return Uploader(
        config.field_data_dir,
        build_destination(config),
        config.thing_name,
        config.delete_after_upload,
        config.concurrency,
    )
