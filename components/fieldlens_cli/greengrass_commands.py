"""`fieldlens build`, `publish` and `deploy`: components to a fleet of Greengrass core devices."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from fieldlens_cli.arguments import DATA_DIR, Subcommands
from fieldlens_cli.output import emit
from fieldlens_core.errors import ModelPackageError

log = logging.getLogger(__name__)


def register(commands: Subcommands) -> None:
    build = commands.add_parser("build", help="zip component artifacts and render recipes (GDK layout)")
    build.add_argument("--version", default="0.1.0", help="component version of the three components")
    build.add_argument("--bucket", default="BUCKET_NAME", help="artifacts bucket the recipes point at")
    build.add_argument("--model", type=Path, default=DATA_DIR / "model", help="model package for fieldlens.Model")
    build.add_argument("--no-model", action="store_true", help="build without the model component")
    build.add_argument("--out", type=Path, default=Path("greengrass-build"))
    build.add_argument("--gdk-component", help="build one component the way `gdk component build` expects")
    build.set_defaults(handler=build_command)
    for verb, text, handler in (
        ("publish", "upload artifacts and create component versions", publish_command),
        ("deploy", "deploy the built component versions to a thing group", deploy_command),
    ):
        sub = commands.add_parser(verb, help=text)
        sub.add_argument("--build", type=Path, default=Path("greengrass-build"))
        sub.add_argument("--region")
        sub.add_argument("--endpoint-url", help="S3 endpoint (tests)")
        if verb == "publish":
            sub.add_argument("--bucket", required=True)
        else:
            sub.add_argument("--thing-group", required=True, help="thing group ARN")
            sub.add_argument("--merge", action="append", help="COMPONENT=JSON configuration to merge")
        sub.set_defaults(handler=handler)


def build_command(args: argparse.Namespace) -> int:
    from fieldlens_infra.build import build

    if args.gdk_component:
        from fieldlens_infra.gdk import gdk_build

        try:
            recipe = gdk_build(args.gdk_component, args.out, None if args.no_model else args.model)
        except (ValueError, ModelPackageError) as exc:
            log.error("%s", exc)
            return 1
        emit(f"built {args.gdk_component} for the GDK: {recipe}")
        return 0

    try:
        versions = build(args.out, args.version, args.bucket, None if args.no_model else args.model)
    except ModelPackageError as exc:
        log.error("%s (pass --no-model to build the components only)", exc)
        return 1
    for name, version in versions.items():
        emit(f"built {name} {version}")
    emit(f"artifacts and recipes in {args.out}")
    return 0


def clients(args: argparse.Namespace) -> tuple[Any, Any]:
    import boto3

    s3 = boto3.client("s3", region_name=args.region, endpoint_url=args.endpoint_url)
    greengrass = boto3.client("greengrassv2", region_name=args.region)
    return s3, greengrass


def publish_command(args: argparse.Namespace) -> int:
    from fieldlens_infra.publish import publish

    s3, greengrass = clients(args)
    for name, arn in publish(args.build, s3, greengrass, args.bucket).items():
        emit(f"published {name}: {arn}")
    return 0


def built_versions(build_dir: Path) -> dict[str, str]:
    versions = {}
    for recipe in sorted((build_dir / "recipes").glob("*.yaml")):
        document = yaml.safe_load(recipe.read_text())
        versions[document["ComponentName"]] = document["ComponentVersion"]
    return versions


def deploy_command(args: argparse.Namespace) -> int:
    from fieldlens_infra.deploy import deploy

    _, greengrass = clients(args)
    merges: dict[str, dict[str, Any]] = {}
    for item in args.merge or []:
        component, _, document = item.partition("=")
        merges[component] = json.loads(document)
    deployment = deploy(greengrass, args.thing_group, built_versions(args.build), merges)
    emit(f"deployment {deployment} to {args.thing_group}")
    return 0
