"""The decision log: every verdict of the gate, appended beside the models it judged.

One JSON object a line in ``<models>/decisions.jsonl``: candidate, current model, dataset hash,
the images both were scored on, their figures, the verdict, and whether it was forced. It only
grows, so a published model can always be traced to the evidence it was published on, and a
line half-written by a crash is skipped when read rather than hiding the others.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DECISIONS_FILE = "decisions.jsonl"


def append_decision(models_dir: Path, record: dict[str, Any]) -> None:
    """Append one verdict (a single write of one line, then fsync: a crash leaves whole lines)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n").encode()
    descriptor = os.open(models_dir / DECISIONS_FILE, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(descriptor).st_size
        if size and os.pread(descriptor, 1, size - 1) != b"\n":
            line = b"\n" + line  # a line torn by a crash ends here, and does not swallow this one
        os.write(descriptor, line)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_decisions(models_dir: Path, limit: int = 50) -> list[dict[str, Any]]:
    """The newest ``limit`` verdicts, newest first; unreadable lines are skipped and logged."""
    try:
        lines = (models_dir / DECISIONS_FILE).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    found = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except ValueError:
            log.warning("%s line %d is not JSON; skipped", models_dir / DECISIONS_FILE, number)
            continue
        if isinstance(record, dict):
            found.append(record)
    return found[::-1][:limit]
