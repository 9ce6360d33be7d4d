"""Arguments several commands share: where the data lives, which broker, where uploads go."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fieldlens_core import topics
from fieldlens_core.config import DEFAULT_BROKER_URL

DATA_DIR = Path("fieldlens-data")

Subcommands = Any  # argparse's _SubParsersAction, which typeshed keeps private
"""What a command module's ``register`` receives: ``subparsers.add_parser(...)`` adds its command."""


def broker_arguments(parser: argparse.ArgumentParser, serving: bool = False) -> None:
    parser.add_argument("--broker", default=DEFAULT_BROKER_URL, help="mqtt://HOST:PORT (default %(default)s)")
    if serving:
        parser.add_argument(
            "--name",
            default=topics.DEFAULT_NAME,
            help="topic name: serves /request/classify/NAME and the fleet-wide /request/classify (default %(default)s)",
        )
    else:
        parser.add_argument(
            "--name",
            help="ask one device's topics, /request/classify/NAME -> /response/prediction/NAME (default: the "
            "fleet-wide pair /request/classify -> /response/prediction, which every device answers)",
        )


def upload_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bucket", help="S3 bucket for field data (default: a local stand-in directory)")
    parser.add_argument("--prefix", help="S3 key prefix (the classifier's s3Prefix; default field-data)")
    parser.add_argument("--endpoint-url", help="S3-compatible endpoint")
    parser.add_argument("--region", help="AWS region")
    parser.add_argument("--local-bucket-dir", type=Path, default=DATA_DIR / "bucket", help="stand-in for a bucket")
