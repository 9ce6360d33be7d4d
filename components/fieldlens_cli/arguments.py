"""Arguments several commands share: where the data lives, which broker, where uploads go."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fieldlens_core import topics
from fieldlens_core.config import DEFAULT_BROKER_URL, BrokerConfig, broker_config_from

DATA_DIR = Path("fieldlens-data")

Subcommands = Any  # argparse's _SubParsersAction, which typeshed keeps private
"""What a command module's ``register`` receives: ``subparsers.add_parser(...)`` adds its command."""


def topic_name(text: str) -> str:
    """argparse's type for ``--name``: a name that cannot be a topic level is a usage error, at once."""
    try:
        return topics.validate_name(text)
    except topics.TopicNameError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def broker_arguments(parser: argparse.ArgumentParser, serving: bool = False) -> None:
    """``--broker`` and, for AWS IoT Core or any TLS broker, ``--ca``, ``--cert``, ``--key`` and
    ``--client-id``: the same dests as a component's own flags (fieldlens_core.config.BROKER_FLAGS),
    read by :func:`broker_config`. ``serve`` hands them to the components."""
    parser.add_argument(
        "--broker",
        default=DEFAULT_BROKER_URL,
        help="mqtt://HOST:PORT, or mqtts://HOST:PORT for TLS (AWS IoT Core: mqtts://ENDPOINT:8883) "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--ca",
        dest="ca_file",
        type=Path,
        help="mqtts://: the CA bundle to trust, AmazonRootCA1.pem for AWS IoT Core (default: the system's CAs)",
    )
    parser.add_argument(
        "--cert", dest="cert_file", type=Path, help="mqtts://: the device certificate, PEM (default: none)"
    )
    parser.add_argument(
        "--key", dest="key_file", type=Path, help="mqtts://: the device certificate's private key (default: none)"
    )
    parser.add_argument(
        "--client-id",
        dest="client_id",
        help="MQTT client id; AWS IoT Core's fleet policy admits only the thing name (default: a fresh one"
        + (" per component; the uploader's gets #uploader appended)" if serving else ")"),
    )
    if serving:
        parser.add_argument(
            "--name",
            type=topic_name,
            help="topic name: serves /request/classify/NAME and the fleet-wide /request/classify (default: the "
            f"file's, else {topics.DEFAULT_NAME})",
        )
    else:
        parser.add_argument(
            "--name",
            type=topic_name,
            help="ask one device's topics, /request/classify/NAME -> /response/prediction/NAME (default: the "
            "fleet-wide pair /request/classify -> /response/prediction, which every device answers)",
        )


def broker_config(args: argparse.Namespace, **settings: Any) -> BrokerConfig:
    """The broker the flags name, validated (InvalidInputError for a malformed URL, with its form)."""
    return broker_config_from(args, **settings)


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds above zero (a zero timeout could never succeed)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0")
    return value


def aws_arguments(parser: argparse.ArgumentParser, service: str = "S3") -> None:
    """``--region`` and ``--endpoint-url``, for every command that reaches AWS (credentials come from
    boto3's usual chain: a profile, the environment, or a core's token exchange service)."""
    parser.add_argument("--region", help="AWS region (default: AWS_DEFAULT_REGION, or your profile's region)")
    parser.add_argument(
        "--endpoint-url", help=f"{service} endpoint URL, for an S3-compatible store or a test (default: AWS's)"
    )


def upload_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bucket", help="S3 bucket for field data (default: a local stand-in directory)")
    parser.add_argument("--prefix", help="S3 key prefix (the classifier's s3Prefix; default field-data)")
    aws_arguments(parser)
    parser.add_argument(  # no argparse default: under `serve --config` only a flag given overrides the file
        "--local-bucket-dir", type=Path, help=f"stand-in for a bucket (default: {DATA_DIR / 'bucket'})"
    )
