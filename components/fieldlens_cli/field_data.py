"""`fieldlens field-data ls | stats | sync`: what the device kept, and pushing the queue now."""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from fieldlens_cli.arguments import DATA_DIR, Subcommands, upload_arguments
from fieldlens_cli.output import emit
from fieldlens_core.errors import FieldlensError, NotFoundError
from fieldlens_fielddata.directory import DEFAULT_S3_PREFIX, FieldDataDir
from fieldlens_fielddata.sidecar import Sidecar, SidecarError
from fieldlens_fielddata.uploader import DrainReport
from fieldlens_uploader.build import build_destination, build_uploader
from fieldlens_uploader.config import UploaderConfig

log = logging.getLogger(__name__)

BANDS = ((0.6, "< 0.6"), (0.9, "0.6-0.9"), (1.01, "> 0.9"))  # the seed's confidence band


def band(confidence: float) -> str:
    return next(name for upper, name in BANDS if confidence < upper)


def register(commands: Subcommands) -> None:
    field_data = commands.add_parser("field-data", help="field images kept locally and in the bucket")
    field_commands = field_data.add_subparsers(dest="field_command", required=True)
    for name, text in (
        ("ls", "list kept images and their upload state"),
        ("stats", "counts per predicted label and confidence band"),
        ("sync", "upload the queue now, with a progress bar"),
    ):
        sub = field_commands.add_parser(name, help=text)
        sub.add_argument("--field-data", type=Path, default=DATA_DIR / "field-images")
        sub.add_argument("--thing-name", help="the device named in status (default: host name)")
        upload_arguments(sub)
        if name == "ls":
            sub.add_argument("--remote", action="store_true", help="list the bucket's keys instead")
        sub.set_defaults(handler=run_field_data)


def uploader_config(args: argparse.Namespace) -> UploaderConfig:
    raw = {
        "field_data_dir": args.field_data,
        "bucket": args.bucket,
        "endpoint_url": args.endpoint_url,
        "region": args.region,
        "local_bucket_dir": args.local_bucket_dir,
        "thing_name": args.thing_name,
    }
    return UploaderConfig.model_validate({k: v for k, v in raw.items() if v is not None})


def run_field_data(args: argparse.Namespace) -> int:
    config = uploader_config(args)
    if not config.field_data_dir.is_dir():
        raise NotFoundError(
            f"no field-data directory at {config.field_data_dir}",
            "Pass --field-data DIR: the classifier's fieldDataDir (`fieldlens serve --field-data`; the demo keeps "
            "its images in fieldlens-data/field-images, on a core /var/lib/fieldlens/field-images)",
        )
    if args.field_command == "ls":
        return list_remote(config, args.prefix) if args.remote else list_local(config.field_data_dir)
    if args.field_command == "stats":
        return stats(config.field_data_dir)
    return sync(config)


def list_local(root: Path) -> int:
    emit(f"{'image id':<30} {'state':<9} {'prediction':<24} {'conf':>6}  {'label':<16} reason")
    for pair, sidecar in FieldDataDir(root).read_all():
        if isinstance(sidecar, SidecarError):
            emit(f"{pair.image_id:<30} {'corrupt':<9} ({sidecar}: the uploader will quarantine it)")
            continue
        label = (sidecar.prediction or "?")[:24]
        emit(
            f"{pair.image_id:<30} {pair.state:<9} {label:<24} {sidecar.confidence:>6.3f}  "
            f"{(sidecar.label or '-')[:16]:<16} {sidecar.reason}"
        )
    quarantined = FieldDataDir(root).quarantined()
    if quarantined:
        emit(f"{len(quarantined)} files in {quarantined[0].parent}")
    return 0


def list_remote(config: UploaderConfig, key_prefix: str | None) -> int:
    destination = build_destination(config)
    prefix = "/".join(p for p in ((key_prefix or DEFAULT_S3_PREFIX).strip("/"), config.thing_name) if p)
    count = size = 0
    for key, length in destination.keys(prefix):
        emit(f"{length:>10}  {key}")
        count, size = count + 1, size + length
    emit(f"{count} objects, {size} bytes in {destination.description}/{prefix}")
    return 0


def stats(root: Path) -> int:
    table: Counter[tuple[str, str]] = Counter()
    states: Counter[str] = Counter()
    for pair, sidecar in FieldDataDir(root).read_all():
        states[pair.state] += 1
        if isinstance(sidecar, Sidecar):
            table[(sidecar.prediction or "?", band(sidecar.confidence))] += 1
    labels = sorted({label for label, _ in table}, key=lambda label: -sum(table[(label, b)] for _, b in BANDS))
    emit(f"{'prediction':<28}" + "".join(f"{name:>10}" for _, name in BANDS) + f"{'total':>10}")
    for label in labels:
        counts = [table[(label, name)] for _, name in BANDS]
        emit(f"{label[:28]:<28}" + "".join(f"{c:>10}" for c in counts) + f"{sum(counts):>10}")
    emit(f"\n{sum(states.values())} images kept: {states['queued']} queued, {states['uploaded']} uploaded")
    return 0


def sync(config: UploaderConfig) -> int:
    uploader = build_uploader(config)
    total = uploader.directory.queue_stats().queued
    bar = tqdm(total=total, unit="image", desc=f"to {uploader.destination.description}", disable=None)

    def progress(report: DrainReport) -> None:
        bar.update(report.uploaded + report.quarantined - bar.n)

    try:
        report = uploader.drain(progress)
    finally:
        uploader.close()
        bar.close()
    emit(f"uploaded {report.uploaded} images ({report.bytes} bytes), quarantined {report.quarantined}")
    if report.outage:
        raise FieldlensError(
            f"stopped early, the rest stays queued: {report.error}",
            "Nothing is lost: run `fieldlens field-data sync` again once the bucket is reachable",
        )
    return 0
