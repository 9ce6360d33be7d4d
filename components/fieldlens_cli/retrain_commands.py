"""`fieldlens label`, `dataset`, `retrain` and `model install`: the retrain loop from the command line."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from fieldlens_cli.output import emit
from fieldlens_core.errors import ModelPackageError
from fieldlens_core.model_install import install_package
from fieldlens_core.model_package import ModelPackage
from fieldlens_retrain.labels import LabelError, export_labels, import_labels, labelled, read_labels
from fieldlens_retrain.pipeline import current_package

log = logging.getLogger(__name__)

EXIT_REJECTED = 4  # `retrain`: the candidate did not beat the current model


def known_labels(model_dir: Path | None) -> list[str] | None:
    package = current_package(model_dir)
    return package.labels if package else None


def label(args: argparse.Namespace) -> int:
    try:
        if args.label_command == "import":
            count = import_labels(args.field_data, read_labels(args.file), known_labels(args.model), args.new_labels)
            emit(f"labelled {count} images in {args.field_data}")
        else:
            found = labelled(args.field_data)
            export_labels(found, args.out, args.format)
            emit(f"wrote {len(found)} labels to {args.out}")
    except LabelError as exc:
        log.error("%s", exc)
        return 2
    return 0


def s3_client(args: argparse.Namespace) -> Any:
    import boto3

    return boto3.client("s3", region_name=args.region, endpoint_url=args.endpoint_url)


def dataset(args: argparse.Namespace) -> int:
    from fieldlens_retrain.dataset import balance_report, build_manifest, download_field_data, write_manifest

    source = str(args.source)
    try:
        field = (
            download_field_data(source, args.cache / "s3", s3_client(args))
            if source.startswith("s3://")
            else Path(source)
        )
        labels = read_labels(args.labels) if args.labels else {}
        manifest = build_manifest(
            field,
            labels,
            args.base,
            known_labels(args.model),
            args.new_labels,
            args.pseudo_threshold,
            args.val_percent,
            trust_sidecar_labels=not source.startswith("s3://"),  # devices wrote those sidecars
        )
    except LabelError as exc:
        log.error("%s", exc)
        return 2
    write_manifest(manifest, args.out)
    for line in balance_report(manifest):
        emit(line)
    emit(f"manifest written to {args.out}")
    return 0


def retrain(args: argparse.Namespace) -> int:
    from fieldlens_retrain.pipeline import run_retrain
    from fieldlens_retrain.train import TrainSettings

    settings = TrainSettings(epochs=args.epochs, seed=args.seed)
    if args.backend == "sagemaker":
        return retrain_on_sagemaker(args)
    report = run_retrain(args.dataset, args.out, args.model, args.cache, args.margin, args.force, settings, args.name)
    for line in report.summary():
        emit(line)
    if not report.decision.publish or report.package is None:
        return EXIT_REJECTED
    return ship(args, report.package)


def ship(args: argparse.Namespace, package: Path) -> int:
    """`--publish [--deploy ARN]`: the new model as a fieldlens.Model component version, then to the fleet."""
    if not args.publish:
        return 0
    if not args.bucket:
        log.error("--publish needs --bucket (the component artifacts bucket)")
        return 2
    import tempfile

    import boto3

    from fieldlens_infra.deploy import redeploy_with
    from fieldlens_infra.publish import publish_model

    s3 = boto3.client("s3", region_name=args.region, endpoint_url=args.endpoint_url)
    greengrass = boto3.client("greengrassv2", region_name=args.region)
    with tempfile.TemporaryDirectory(prefix="fieldlens-model-build-") as work:
        version, arn = publish_model(package, s3, greengrass, args.bucket, Path(work))
    emit(f"published fieldlens.Model {version}: {arn}")
    if args.deploy:
        deployment = redeploy_with(greengrass, args.deploy, {"fieldlens.Model": version})
        emit(f"deployment {deployment}: fieldlens.Model {version} to {args.deploy}, other components unchanged")
    return 0


def reversion(candidate: Path, parent: ModelPackage | None) -> None:
    """The job does not know the current model: version the candidate from it here, as a local retrain does."""
    from fieldlens_core.model_package import load_package, write_card
    from fieldlens_retrain.train import next_version

    package = load_package(candidate)
    version = next_version(parent.card if parent else None, package.labels, parent.labels if parent else None)
    fields = package.card.model_dump(exclude={"files"})
    write_card(candidate, {**fields, "version": version, "parent_version": parent.card.version if parent else None})


def install(args: argparse.Namespace) -> int:
    try:
        card = install_package(args.package, args.model_dir)
    except ModelPackageError as exc:
        log.error("not installed: %s", exc)
        return 1
    emit(f"installed {card.name} {card.version} into {args.model_dir} (now current)")
    return 0


def retrain_on_sagemaker(args: argparse.Namespace) -> int:
    import tempfile

    import boto3

    from fieldlens_retrain.dataset import read_manifest
    from fieldlens_retrain.pipeline import publish_candidate
    from fieldlens_retrain.sagemaker import SageMakerRetrain

    if not args.role_arn or not args.bucket:
        log.error("--backend sagemaker needs --role-arn and --bucket")
        return 2
    region = args.region or boto3.session.Session().region_name or "us-east-1"
    s3 = boto3.client("s3", region_name=region, endpoint_url=args.endpoint_url)
    sagemaker = boto3.client("sagemaker", region_name=region, endpoint_url=args.endpoint_url)
    manifest = read_manifest(args.dataset)
    runner = SageMakerRetrain(s3, sagemaker, args.bucket, args.role_arn, region, args.instance_type)
    job = runner.wait(runner.start(manifest, args.epochs, args.seed), report=emit)
    args.out.mkdir(parents=True, exist_ok=True)
    candidate = runner.fetch(job, Path(tempfile.mkdtemp(prefix=".sagemaker-", dir=args.out)))
    reversion(candidate, current_package(args.model))
    report = publish_candidate(manifest, candidate, args.out, args.model, args.margin, args.force)
    for line in report.summary():
        emit(line)
    if not report.decision.publish or report.package is None:
        return EXIT_REJECTED
    return ship(args, report.package)
