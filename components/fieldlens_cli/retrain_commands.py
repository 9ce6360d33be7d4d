"""`fieldlens label`, `dataset` and `retrain`: the retrain loop from the command line."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fieldlens_cli.arguments import DATA_DIR, Subcommands, aws_arguments
from fieldlens_cli.output import emit
from fieldlens_core.errors import ConfigurationError, ExitCode, InvalidInputError, NotFoundError
from fieldlens_core.model_package import current_package
from fieldlens_fielddata.bucket_labels import BucketLabels
from fieldlens_retrain.dataset import write_manifest
from fieldlens_retrain.gate import DEFAULT_RULES, GateRules
from fieldlens_retrain.labels import export_labels, import_labels, labelled, read_labels

if TYPE_CHECKING:
    from fieldlens_retrain.dataset import Manifest
    from fieldlens_retrain.pipeline import RetrainReport

log = logging.getLogger(__name__)


def register(commands: Subcommands) -> None:
    label_parser = commands.add_parser("label", help="labels of field images")
    label_commands = label_parser.add_subparsers(dest="label_command", required=True)
    label_in = label_commands.add_parser(
        "import",
        help="write labels from a CSV (key,label), COCO JSON or a Label Studio export into sidecars",
        description="Write labels into the field images' sidecars, each as a person's label.",
    )
    label_in.add_argument(
        "file",
        type=Path,
        help="a CSV with a key,label header (key: an image id, <thing>/<id>, a path or an S3 key), a COCO "
        "classification JSON, or Label Studio's JSON export",
    )
    label_out = label_commands.add_parser("export", help="labels from the sidecars to a CSV or COCO JSON")
    label_out.add_argument("--format", choices=["csv", "coco", "label-studio"], default="csv")
    label_out.add_argument(
        "--image-url",
        help="label-studio: each image's URL, with {id} and {s3_key} filled in: the one `label serve` prints "
        "(its address and a token that only reads images); default s3://BUCKET/{s3_key} for an s3:// source, "
        "none for a directory",
    )
    label_out.add_argument("--out", type=Path, required=True, help="the file to write")
    label_in.add_argument(
        "--field-data", type=Path, default=DATA_DIR / "field-images", help="the field-data directory to label"
    )
    label_out.add_argument(
        "--field-data", default=str(DATA_DIR / "field-images"), help="a field-data directory or s3://bucket/prefix"
    )
    for sub in (label_in, label_out):
        sub.set_defaults(handler=label)
    label_out.add_argument("--model", type=Path, default=DATA_DIR / "model", help="the current model (its labels)")
    label_out.add_argument("--cache", type=Path, default=DATA_DIR / "cache", help="where an s3:// source is mirrored")
    aws_arguments(label_out)
    page = label_commands.add_parser("serve", help="a page to label field images with the keyboard")
    page.add_argument(
        "--field-data", default=str(DATA_DIR / "field-images"), help="a field-data directory or s3://bucket/prefix"
    )
    aws_arguments(page)
    page.add_argument("--model", type=Path, default=DATA_DIR / "model", help="the current model (its labels)")
    page.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default %(default)s; 0.0.0.0 needs --allow-host)"
    )
    page.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a name or address other machines open the page by (LAN mode; repeat for each; default: none)",
    )
    page.add_argument("--port", type=int, default=8080, help="port (default %(default)s; 0 for any free port)")
    page.add_argument("--blank-label", default="blank", help="the label `b` gives (default %(default)s)")
    page.add_argument("--labeller", help="your name in the sidecars (default: your user name)")
    page.add_argument("--cache", type=Path, default=DATA_DIR / "cache", help="thumbnails and embeddings")
    page.add_argument("--models", type=Path, default=DATA_DIR / "models", help="where Retrain writes candidates")
    page.add_argument("--base", type=Path, help="a folder of class folders to train on as well (default: none)")
    gate_arguments(page, force=False)
    page.set_defaults(handler=label_page)

    dataset_parser = commands.add_parser("dataset", help="dataset manifests")
    dataset_commands = dataset_parser.add_subparsers(dest="dataset_command", required=True)
    build = dataset_commands.add_parser("build", help="build a manifest from field images (and a base set)")
    build.add_argument(
        "--from",
        dest="source",
        default=str(DATA_DIR / "field-images"),
        help="a field-data directory or s3://bucket/prefix",
    )
    build.add_argument(
        "--labels", type=Path, help="a labels CSV or COCO JSON, besides the sidecars' labels (default: none)"
    )
    build.add_argument("--base", type=Path, help="a folder of class folders to train on as well (default: none)")
    build.add_argument(
        "--model",
        type=Path,
        default=DATA_DIR / "model",
        help="the current model: its classes with training images, plus the labels' new ones, are the candidate's",
    )
    build.add_argument(
        "--pseudo-threshold",
        type=float,
        help="pseudo-label unlabelled images the model is this confident about (default: none are)",
    )
    build.add_argument("--val-percent", type=int, default=20, help="share of images held out for validation")
    build.add_argument("--cache", type=Path, default=DATA_DIR / "cache", help="where an s3:// source is mirrored")
    build.add_argument(
        "--engine",
        choices=["mirror", "duckdb", "athena"],
        default="mirror",
        help="how an s3:// source is read: mirror downloads every pair into --cache (what a local retrain reads); "
        "duckdb (embedded, here) or athena (fleet scale) run one query over the sidecars in the bucket and move "
        "no image: the manifest points at s3:// and `retrain --backend sagemaker` reads the images from there",
    )
    build.add_argument("--athena-database", default="fieldlens", help="--engine athena: the Glue database")
    build.add_argument("--athena-workgroup", default="primary", help="--engine athena: the workgroup")
    build.add_argument(
        "--athena-output",
        help="--engine athena: where query results go (default: s3://BUCKET/fieldlens/athena/results/)",
    )
    aws_arguments(build, "S3 (and, with --engine athena, Athena)")
    build.add_argument("--out", type=Path, required=True, help="the manifest to write")
    build.set_defaults(handler=dataset)

    retrain_parser = commands.add_parser(
        "retrain", help="train a candidate, evaluate it against the current model, gate it"
    )
    arg = retrain_parser.add_argument
    arg("--dataset", type=Path, required=True, help="a manifest from `fieldlens dataset build`")
    arg("--out", type=Path, default=DATA_DIR / "models", help="where candidates, reports and the decision log go")
    arg("--model", type=Path, default=DATA_DIR / "model", help="the current model")
    gate_arguments(retrain_parser, force=True)
    arg("--epochs", type=int, default=100)
    arg("--seed", type=int, default=0)
    arg(
        "--fine-tune",
        choices=["auto", "always", "never"],
        default="auto",
        help="fine-tune the backbone's last blocks: auto tries it when field images are among the training "
        "images and keeps it when a held-out part of them says it helps (the current model's choice is reused "
        "while its classes and most of its images are the same); never: the frozen backbone only, a retrain in "
        "seconds (default: auto)",
    )
    arg(
        "--name",
        help="model name (default: the current model's when the classes are its own, else fieldlens-classifier)",
    )
    arg(
        "--cache",
        type=Path,
        default=DATA_DIR / "cache",
        help="the embeddings, activations and int8 backbone a retrain computes, reused by the next one",
    )
    arg("--backend", choices=["local", "sagemaker"], default="local")
    arg("--role-arn", help="SageMaker execution role (needed with --backend sagemaker; default: none)")
    arg("--bucket", help="S3 bucket: SageMaker's input and output, and --publish's artifacts (default: none)")
    aws_arguments(retrain_parser, "S3 and SageMaker")
    arg("--instance-type", default="ml.m5.large")
    arg("--publish", action="store_true", help="publish the new model as a fieldlens.Model version")
    arg(
        "--deploy",
        metavar="THING_GROUP_ARN",
        help="with --publish: then deploy it to this thing group, every other component kept (default: no deploy)",
    )
    retrain_parser.set_defaults(handler=retrain)


def gate_arguments(parser: argparse.ArgumentParser, force: bool) -> None:
    """The gate's rules (README, "The gate"), the same for `retrain` and the page's Retrain (which
    has no --force: a person forces one candidate from the command line, not every Retrain)."""
    arg = parser.add_argument
    if force:
        arg("--force", action="store_true", help="publish whatever the gate says (the card then says so)")
    arg("--margin", type=float, default=DEFAULT_RULES.margin, help="accuracy it must gain to be published")
    arg(
        "--class-margin",
        type=float,
        default=DEFAULT_RULES.class_margin,
        help="recall any one class may lose before it blocks the gate",
    )
    arg(
        "--min-val-per-class",
        type=int,
        default=DEFAULT_RULES.min_val_per_class,
        help="validation images each class needs before the gate judges",
    )
    arg(
        "--min-val-images",
        type=int,
        default=DEFAULT_RULES.min_val_images,
        help="validation images in all before the gate judges",
    )


def known_labels(model_dir: Path | None) -> list[str] | None:
    package = current_package(model_dir)
    return package.labels if package else None


def label(args: argparse.Namespace) -> int:
    """A bad labels file or an unknown label is a LabelError: main() reports it (exit 2)."""
    if args.label_command == "import":
        field, _ = field_data_root(str(args.field_data), args)
        labels = read_labels(args.file)
        result = import_labels(field, labels)
        if result.unmatched:
            listed = ", ".join(result.unmatched[:10]) + (" …" if len(result.unmatched) > 10 else "")
            message = f"{len(result.unmatched)} of {len(labels)} keys in {args.file} name no image in {field}: {listed}"
            if not result.labelled:
                raise NotFoundError(
                    message,
                    "A key is an image id, <thing>/<image id>, its file name or its S3 key: "
                    "see `fieldlens field-data ls`",
                )
            log.warning("%s", message)
        emit(f"labelled {result.labelled} images in {field}")
    elif args.format == "label-studio":
        return export_label_studio(args)
    else:
        root = field_data_root(args.field_data, args)[0]
        found = labelled(root)
        if not found:
            raise NotFoundError(f"no labelled images in {root}", "Label some first: `fieldlens label serve`")
        export_labels(found, args.out, args.format)
        emit(f"wrote {len(found)} labels to {args.out}")
    return 0


def export_label_studio(args: argparse.Namespace) -> int:
    """Tasks with the model's suggestions, and the project's labelling interface beside them."""
    import json

    from fieldlens_core.atomic import atomic_write
    from fieldlens_fielddata.directory import Pair, device_directories
    from fieldlens_fielddata.sidecar import Sidecar
    from fieldlens_retrain.label_studio import labeling_config, tasks

    root, bucket = field_data_root(args.field_data, args)
    if bucket is not None:
        template = args.image_url or f"s3://{bucket.bucket}/{{s3_key}}"
    elif args.image_url:
        template = args.image_url
    else:
        raise InvalidInputError(
            f"Label Studio tasks for {root} need the labelling page's image URL",
            "Start `fieldlens label serve` on the same directory and pass the --image-url it prints "
            "(its address and a token that can only read images)",
        )

    def image_url(pair: Pair, sidecar: Sidecar) -> str:  # a bucket's key from where the mirror found it
        key = bucket.object_key(pair.thing, pair.image_id) if bucket is not None else sidecar.s3_key
        return template.format(id=pair.key, s3_key=key)

    found = tasks(device_directories(root), image_url)
    atomic_write(args.out, json.dumps(found, indent=1).encode())
    suggested = {str(t["predictions"][0]["result"][0]["value"]["choices"][0]) for t in found if "predictions" in t}
    given = set(labelled(root).values())  # the classes people gave: the next model's, so Label Studio offers them
    known = known_labels(args.model) or sorted(suggested)
    labels = [*known, *sorted(given - set(known))]
    config = args.out.with_suffix(".label-config.xml")
    atomic_write(config, labeling_config(labels).encode())
    emit(f"wrote {len(found)} Label Studio tasks to {args.out} and the labelling interface to {config}")
    return 0


def label_page(args: argparse.Namespace) -> int:
    from fieldlens_labelling.serve import LabelServer, PageOptions

    field, bucket = field_data_root(args.field_data, args)
    if bucket is not None:
        emit(f"labels for {bucket.url} are written to s3://{bucket.bucket}/{bucket.labels_prefix}/")
    options = PageOptions(
        field_data=field,
        model_dir=args.model,
        cache_dir=args.cache,
        host=args.host,
        port=args.port,
        blank_label=args.blank_label,
        labeller=args.labeller,
        models_dir=args.models,
        base=args.base,
        bucket=bucket,
        rules=gate_rules(args),
        allow_hosts=tuple(args.allow_host),
    )
    server = LabelServer(options)
    emit(f"labelling the field images in {args.field_data}: open {server.url}")
    emit(f"for Label Studio (reads images only, until this page stops): --image-url '{server.image_url}'")
    server.run()
    return 0


def field_data_root(
    source: str, args: argparse.Namespace, flag: str = "--field-data"
) -> tuple[Path, BucketLabels | None]:
    """A field-data directory as given, or ``s3://bucket/prefix`` mirrored into ``--cache`` with only
    the labels of its label objects (BucketLabels.mirror): what label serve, label export and
    dataset build each start from."""
    if not source.startswith("s3://"):
        if not Path(source).is_dir():
            raise NotFoundError(
                f"no field-data directory at {source}",
                f"Pass {flag} DIR (the demo keeps its images in fieldlens-data/field-images) or s3://BUCKET/PREFIX",
            )
        return Path(source), None
    bucket = BucketLabels(s3_client(args), source)
    root = bucket.mirror(args.cache / "s3")
    emit(f"mirrored {source} into {root}")
    return root, bucket


def s3_client(args: argparse.Namespace) -> Any:
    import boto3

    return boto3.client("s3", region_name=args.region, endpoint_url=args.endpoint_url)


def dataset(args: argparse.Namespace) -> int:
    from fieldlens_retrain.dataset import balance_report, build_manifest

    labels = read_labels(args.labels) if args.labels else {}
    if args.engine != "mirror":
        manifest = bucket_manifest(args, labels)
    else:
        field, _ = field_data_root(args.source, args, "--from")
        manifest = build_manifest(
            field,
            labels,
            args.base,
            known_labels(args.model),
            args.pseudo_threshold,
            args.val_percent,
            trust_sidecar_labels=True,  # a bucket's mirror keeps only the labels from its label objects
        )
    write_manifest(manifest, args.out)
    for line in balance_report(manifest):
        emit(line)
    for conflict in manifest.conflicts:
        log.warning(
            "left out, identical photos with different labels (%s): %s",
            " / ".join(conflict.labels),
            ", ".join(conflict.keys),
        )
    if manifest.untrained_classes:  # a label whose every image the split sent to validation
        log.warning(
            "left out, labels with validation images only (the split sends a fifth of the images there, "
            "by content), so a candidate cannot learn them: %s; label more images of them",
            ", ".join(manifest.untrained_classes),
        )
    emit(f"manifest written to {args.out}")
    return 0


def bucket_manifest(args: argparse.Namespace, labels: dict[str, str]) -> Manifest:
    """`--engine duckdb|athena`: the manifest from one query over the sidecars in the bucket."""
    import boto3

    from fieldlens_retrain.sidecar_query import (
        AthenaSidecars,
        DuckDBSidecars,
        FieldDataLocation,
        S3Access,
        SidecarEngine,
        build_bucket_manifest,
    )

    if not args.source.startswith("s3://"):
        raise InvalidInputError(
            f"--engine {args.engine} queries a bucket: {args.source} is a directory",
            "Pass --from s3://BUCKET/PREFIX, or --engine mirror (the default) for a directory",
        )
    location = FieldDataLocation.parse(args.source)
    s3 = s3_client(args)
    engine: SidecarEngine
    if args.engine == "duckdb":
        engine = DuckDBSidecars(S3Access.from_boto(args.region, args.endpoint_url))
    else:
        athena = boto3.client("athena", region_name=args.region, endpoint_url=args.endpoint_url)
        engine = AthenaSidecars(athena, s3, args.athena_database, args.athena_workgroup, args.athena_output)
    manifest = build_bucket_manifest(
        location, engine, s3, labels, args.base, known_labels(args.model), args.pseudo_threshold, args.val_percent
    )
    emit(f"queried the sidecars in {args.source} with {args.engine}: no image was downloaded")
    return manifest


def local_dataset(args: argparse.Namespace) -> Path:
    """The manifest a local retrain reads: as given, or, where its images are in S3 (`dataset build
    --engine duckdb|athena`), a copy pointing at them downloaded into --cache (checked by sha256)."""
    from fieldlens_retrain.dataset import read_manifest
    from fieldlens_retrain.sidecar_query import in_s3, localise

    manifest = read_manifest(args.dataset)
    if not any(in_s3(entry.path) for entry in manifest.entries):
        return Path(args.dataset)
    emit(f"{args.dataset}: its images are in S3; downloading them into {args.cache / 'images'} for a local retrain")
    local = args.cache / "manifests" / f"{manifest.sha256}.json"
    write_manifest(localise(manifest, s3_client(args), args.cache / "images"), local)
    return Path(local)


def retrain(args: argparse.Namespace) -> int:
    from fieldlens_retrain.pipeline import run_retrain
    from fieldlens_retrain.train import TrainSettings

    if (args.publish or args.deploy) and not args.bucket:  # before training, not after it
        raise InvalidInputError("--publish needs --bucket", "Pass --bucket, the component artifacts bucket")
    if args.deploy and not args.publish:
        raise InvalidInputError(
            "--deploy needs --publish", "A model is deployed as the fieldlens.Model version it publishes"
        )
    if args.publish:  # credentials, region and bucket are checked before minutes of training, not after
        check_bucket(s3_client(args), args.bucket)
    if args.backend == "sagemaker":
        report = retrain_on_sagemaker(args)
    else:
        settings = TrainSettings(epochs=args.epochs, seed=args.seed, fine_tune=args.fine_tune)
        dataset = local_dataset(args)
        report = run_retrain(dataset, args.out, args.model, args.cache, gate_rules(args), settings, args.name)
    for line in report.summary():
        emit(line)
    if not report.decision.publish or report.package is None:
        return ExitCode.REJECTED
    return ship(args, report.package)


def check_bucket(s3: Any, bucket: str) -> None:
    """NotFoundError naming ``bucket`` when it does not exist (HeadBucket says only "404");
    any other refusal (credentials, region, access) is translated as every AWS error is."""
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
            raise NotFoundError(
                f"no bucket {bucket}", "Pass --bucket, the component artifacts bucket the stack created"
            ) from None
        raise


def ship(args: argparse.Namespace, package: Path) -> int:
    """`--publish [--deploy ARN]`: the new model as a fieldlens.Model component version, then to the fleet."""
    if not args.publish:
        return 0
    import tempfile

    import boto3

    from fieldlens_cli.greengrass_commands import deploy_plan
    from fieldlens_infra.publish import publish_model

    s3 = s3_client(args)
    greengrass = boto3.client("greengrassv2", region_name=args.region)
    with tempfile.TemporaryDirectory(prefix="fieldlens-model-build-") as work:
        version, arn = publish_model(package, s3, greengrass, args.bucket, Path(work))
    emit(f"published fieldlens.Model {version}: {arn}")
    if args.deploy:
        return deploy_plan(greengrass, args.deploy, {"fieldlens.Model": version}, {}, dry_run=False)
    return 0


def retrain_on_sagemaker(args: argparse.Namespace) -> RetrainReport:
    import boto3

    from fieldlens_retrain.pipeline import run_sagemaker_retrain
    from fieldlens_retrain.sagemaker import SageMakerRetrain

    if not args.role_arn or not args.bucket:
        raise ConfigurationError("--backend sagemaker needs --role-arn and --bucket")
    region = args.region or boto3.session.Session().region_name or "us-east-1"
    s3 = boto3.client("s3", region_name=region, endpoint_url=args.endpoint_url)
    sagemaker = boto3.client("sagemaker", region_name=region, endpoint_url=args.endpoint_url)
    runner = SageMakerRetrain(
        s3, sagemaker, args.bucket, args.role_arn, region, args.instance_type, holdout_cache=args.cache / "images"
    )
    return run_sagemaker_retrain(
        runner,
        args.dataset,
        args.out,
        args.model,
        args.epochs,
        args.seed,
        gate_rules(args),
        report=emit,
        fine_tune=args.fine_tune,
    )


def gate_rules(args: argparse.Namespace) -> GateRules:
    force = getattr(args, "force", False)
    return GateRules(
        margin=args.margin,
        class_margin=args.class_margin,
        min_val_per_class=args.min_val_per_class,
        min_val_images=args.min_val_images,
        force=force,
    )
