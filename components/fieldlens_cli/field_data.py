"""`fieldlens field-data ls | stats | sync`: what the device kept, and pushing the queue now."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from fieldlens_cli.output import emit
from fieldlens_core.errors import ConfigurationError
from fieldlens_fielddata.layout import QUARANTINE_DIR, RECEIPT_SUFFIX, SIDECAR_SUFFIX, image_time
from fieldlens_fielddata.queue import queue_stats
from fieldlens_fielddata.store import read_sidecar
from fieldlens_fielddata.uploader import DrainReport
from fieldlens_uploader.config import UploaderConfig
from fieldlens_uploader.main import build_destination, build_uploader

log = logging.getLogger(__name__)

BANDS = ((0.6, "< 0.6"), (0.9, "0.6-0.9"), (1.01, "> 0.9"))  # the seed's confidence band


def band(confidence: float) -> str:
    return next(name for upper, name in BANDS if confidence < upper)


def kept_pairs(root: Path) -> list[tuple[Path, dict[str, Any] | None]]:
    """(sidecar, its JSON or None when unreadable) of every complete pair, oldest first."""
    pairs: list[tuple[Path, dict[str, Any] | None]] = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if d != QUARANTINE_DIR)
        for name in sorted(names):
            if name.endswith(SIDECAR_SUFFIX) and image_time(name[: -len(SIDECAR_SUFFIX)]) is not None:
                path = Path(directory) / name
                try:
                    pairs.append((path, read_sidecar(path)))
                except (ValueError, OSError):
                    pairs.append((path, None))
    return pairs


def uploader_config(args: argparse.Namespace) -> UploaderConfig:
    raw = {
        "field_data_dir": args.field_data,
        "bucket": args.bucket,
        "prefix": args.prefix,
        "endpoint_url": args.endpoint_url,
        "region": args.region,
        "local_bucket_dir": args.local_bucket_dir,
        "thing_name": args.thing_name,
    }
    return UploaderConfig.model_validate({k: v for k, v in raw.items() if v is not None})


def run_field_data(args: argparse.Namespace) -> int:
    try:
        config = uploader_config(args)
    except (ConfigurationError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    if args.field_command == "ls":
        return list_remote(config) if args.remote else list_local(config.field_data_dir)
    if args.field_command == "stats":
        return stats(config.field_data_dir)
    return sync(config)


def list_local(root: Path) -> int:
    emit(f"{'image id':<30} {'state':<9} {'prediction':<24} {'conf':>6}  reason")
    for sidecar, document in kept_pairs(root):
        image_id = sidecar.name[: -len(SIDECAR_SUFFIX)]
        state = "uploaded" if sidecar.with_suffix(RECEIPT_SUFFIX).exists() else "queued"
        if document is None:
            emit(f"{image_id:<30} {'corrupt':<9} (sidecar unreadable: the uploader will quarantine it)")
            continue
        label, confidence = str(document.get("prediction", "?")), float(document.get("confidence", 0.0))
        emit(f"{image_id:<30} {state:<9} {label[:24]:<24} {confidence:>6.3f}  {document.get('reason', '')}")
    quarantined = len(list((root / QUARANTINE_DIR).glob("*"))) if (root / QUARANTINE_DIR).exists() else 0
    if quarantined:
        emit(f"{quarantined} files in {root / QUARANTINE_DIR}")
    return 0


def list_remote(config: UploaderConfig) -> int:
    destination = build_destination(config)
    prefix = "/".join(p for p in (config.prefix.strip("/"), config.thing_name) if p)
    count = size = 0
    for key, length in destination.keys(prefix):
        emit(f"{length:>10}  {key}")
        count, size = count + 1, size + length
    emit(f"{count} objects, {size} bytes in {destination.description}/{prefix}")
    return 0


def stats(root: Path) -> int:
    table: Counter[tuple[str, str]] = Counter()
    states: Counter[str] = Counter()
    for sidecar, document in kept_pairs(root):
        states["uploaded" if sidecar.with_suffix(RECEIPT_SUFFIX).exists() else "queued"] += 1
        if document is not None:
            table[(str(document.get("prediction", "?")), band(float(document.get("confidence", 0.0))))] += 1
    labels = sorted({label for label, _ in table}, key=lambda label: -sum(table[(label, b)] for _, b in BANDS))
    emit(f"{'prediction':<28}" + "".join(f"{name:>10}" for _, name in BANDS) + f"{'total':>10}")
    for label in labels:
        counts = [table[(label, name)] for _, name in BANDS]
        emit(f"{label[:28]:<28}" + "".join(f"{c:>10}" for c in counts) + f"{sum(counts):>10}")
    emit(f"\n{sum(states.values())} images kept: {states['queued']} queued, {states['uploaded']} uploaded")
    return 0


def sync(config: UploaderConfig) -> int:
    uploader = build_uploader(config)
    destination = uploader.destination
    total = queue_stats(config.field_data_dir).queued

    def progress(report: DrainReport) -> None:
        done = report.uploaded + report.quarantined
        filled = int(30 * done / total) if total else 30
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} to {destination.description}")
        sys.stderr.flush()

    try:
        report = uploader.drain(progress)
    finally:
        uploader.close()
    sys.stderr.write("\n")
    emit(f"uploaded {report.uploaded} images ({report.bytes} bytes), quarantined {report.quarantined}")
    if report.outage:
        log.error("stopped early, the rest stays queued: %s", report.error)
        return 1
    return 0
