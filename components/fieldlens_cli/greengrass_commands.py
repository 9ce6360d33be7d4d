"""`fieldlens build`, `publish` and `deploy`: components to a fleet of Greengrass core devices."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from fieldlens_cli.arguments import DATA_DIR, Subcommands, aws_arguments
from fieldlens_cli.output import emit
from fieldlens_core.errors import InvalidInputError, ModelPackageError, NotFoundError

log = logging.getLogger(__name__)


def register(commands: Subcommands) -> None:
    build = commands.add_parser("build", help="zip component artifacts and render recipes (GDK layout)")
    build.add_argument(
        "--version",
        default="0.1.0",
        help="version of the three code components (fieldlens.Model takes its model's version)",
    )
    build.add_argument("--bucket", default="BUCKET_NAME", help="artifacts bucket the recipes point at")
    build.add_argument("--model", type=Path, default=DATA_DIR / "model", help="model package for fieldlens.Model")
    build.add_argument("--no-model", action="store_true", help="build without the model component")
    build.add_argument("--out", type=Path, default=Path("greengrass-build"))
    build.add_argument(
        "--gdk-component", help="build only this component, the way `gdk component build` expects (default: all)"
    )
    build.set_defaults(handler=build_command)
    for verb, text, handler in (
        ("publish", "upload artifacts and create component versions", publish_command),
        ("deploy", "deploy the built component versions to a thing group", deploy_command),
    ):
        sub = commands.add_parser(verb, help=text)
        sub.add_argument("--build", type=Path, default=Path("greengrass-build"), help="what `fieldlens build` wrote")
        aws_arguments(sub)
        if verb == "publish":
            sub.add_argument("--bucket", required=True, help="the artifacts bucket the build's recipes point at")
        else:
            sub.add_argument("--thing-group", required=True, help="the thing group's ARN")
            sub.add_argument(
                "--merge",
                action="append",
                metavar="COMPONENT=JSON",
                help="configuration to merge into one built component, for example "
                '\'fieldlens.Classifier={"name": "hens"}\' (repeatable; default: none)',
            )
            sub.add_argument(
                "--dry-run", action="store_true", help="print what would change on the target and send nothing"
            )
        sub.set_defaults(handler=handler)


def build_command(args: argparse.Namespace) -> int:
    from fieldlens_infra.build import build

    if args.gdk_component:
        from fieldlens_infra.gdk import gdk_build

        try:
            recipe = gdk_build(args.gdk_component, args.out, None if args.no_model else args.model)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        emit(f"built {args.gdk_component} for the GDK: {recipe}")
        return 0

    try:
        versions = build(args.out, args.version, args.bucket, None if args.no_model else args.model)
    except ModelPackageError as exc:
        raise ModelPackageError(exc.message, "Pass --model DIR, or --no-model to build the components only") from None
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

    built_versions(args.build)  # refuse a missing or empty build before any call to AWS
    s3, greengrass = clients(args)
    for name, arn in publish(args.build, s3, greengrass, args.bucket).items():
        emit(f"published {name}: {arn}")
    return 0


def built_versions(build_dir: Path) -> dict[str, str]:
    """Component name -> version of each recipe `fieldlens build` wrote; NotFoundError when there are none."""
    hint = "Run `fieldlens build --bucket BUCKET` first, or pass --build DIR where it wrote greengrass-build/"
    if not (build_dir / "recipes").is_dir():
        raise NotFoundError(f"no build at {build_dir} (no recipes/ folder)", hint)
    versions = {}
    for recipe in sorted((build_dir / "recipes").glob("*.yaml")):
        document = yaml.safe_load(recipe.read_text())
        versions[document["ComponentName"]] = document["ComponentVersion"]
    if not versions:
        raise NotFoundError(f"the build at {build_dir} holds no component recipe", hint)
    return versions


def parse_merges(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``COMPONENT=JSON`` flags as component -> configuration; InvalidInputError naming the bad one."""
    merges: dict[str, dict[str, Any]] = {}
    for item in items or []:
        component, equals, document = item.partition("=")
        example = 'for example --merge \'fieldlens.Classifier={"name": "hens"}\''
        if not equals or not component.strip():
            raise InvalidInputError(f"--merge {item!r} is not COMPONENT=JSON", example)
        try:
            merge = json.loads(document)
        except ValueError as exc:
            raise InvalidInputError(f"--merge for {component}: not valid JSON ({exc})", example) from None
        if not isinstance(merge, dict):
            raise InvalidInputError(f"--merge for {component}: the configuration must be a JSON object", example)
        merges[component.strip()] = merge
    return merges


def deploy_command(args: argparse.Namespace) -> int:
    versions = built_versions(args.build)
    merges = parse_merges(args.merge)
    arn = args.thing_group.split(":")
    if len(arn) < 6 or arn[:3] != ["arn", "aws", "iot"] or not arn[5].startswith("thinggroup/"):
        raise InvalidInputError(
            f"--thing-group {args.thing_group!r} is not a thing group ARN",
            "It looks like arn:aws:iot:REGION:ACCOUNT:thinggroup/NAME: "
            "`aws iot describe-thing-group --thing-group-name NAME --query thingGroupArn` prints it",
        )
    args.region = args.region or arn[3]  # the group's own region, unless told otherwise
    _, greengrass = clients(args)
    return deploy_plan(greengrass, args.thing_group, versions, merges, args.dry_run)


def deploy_plan(
    greengrass: Any, target: str, versions: dict[str, str], merges: dict[str, dict[str, Any]], dry_run: bool
) -> int:
    """`deploy` and `retrain --deploy` alike: print the change, then send it (unless a dry run)."""
    from fieldlens_infra.deploy import create_deployment, plan_deployment

    plan = plan_deployment(greengrass, target, versions, merges)
    for line in plan.lines():
        emit(line)
    if dry_run:
        emit("dry run: nothing was sent")
        return 0
    emit(f"deployment {create_deployment(greengrass, plan)} created")
    return 0
