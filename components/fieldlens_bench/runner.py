"""The bench's parts, what each needs installed, and one run of them.

Light to import (the CLI's parser reads :data:`PARTS` at start-up): a part's module, and with it
numpy, psutil or torch, is imported only when the part runs.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from fieldlens_cli.output import emit
from fieldlens_core.errors import FieldlensError

if TYPE_CHECKING:
    from fieldlens_bench.common import Result
    from fieldlens_bench.markdown import MarkdownLog


@dataclass(frozen=True)
class BenchOptions:
    """The flags of `fieldlens bench`, typed (their defaults are the command's)."""

    data_dir: Path
    requests: int
    burst: int
    variant: str
    workers: int | None
    spinning: bool
    repeat: int
    cpus: int | None
    baseline: bool
    continuous_seconds: float
    label_images: int
    fine_tune: Literal["auto", "always", "never"] = "auto"


@dataclass(frozen=True)
class Part:
    module: str
    needs: dict[str, str]
    """Module a part imports -> the extra of ``pyproject.toml`` that installs it."""


PARTS = {
    "edge": Part("fieldlens_bench.edge", {"psutil": "bench"}),
    "upload": Part("fieldlens_bench.upload", {"moto": "bench", "flask": "bench"}),  # moto's S3 server
    "retrain": Part("fieldlens_bench.retrain", {"torch": "train"}),
    "label": Part("fieldlens_bench.label", {"starlette": "label", "uvicorn": "label"}),
    "label-order": Part(
        "fieldlens_bench.label_order",
        {"torch": "train", "matplotlib": "train", "starlette": "label", "uvicorn": "label"},
    ),
    "continuous": Part("fieldlens_bench.continuous", {"psutil": "bench"}),
}
"""Every part, in the order a full run measures them."""


class MissingDependencyError(FieldlensError):
    """A part needs a package that is not installed: the hint names the extra that installs it."""


def check_installed(parts: list[str]) -> None:
    """Before anything runs: every module the chosen parts need, or one line naming the extras."""
    missing = {
        module: extra
        for part in parts
        for module, extra in PARTS[part].needs.items()
        if importlib.util.find_spec(module) is None
    }
    if missing:
        names = sorted(missing)
        extras = ",".join(sorted(set(missing.values())))
        raise MissingDependencyError(
            f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} not installed",
            f"Install what the bench needs: pip install 'fieldlens[{extras}]'",
        )


def run_parts(options: BenchOptions, only: str | None = None, markdown: MarkdownLog | None = None) -> dict[str, Result]:
    """Run every part (or ``only`` one), printing each part's table as it ends; part name -> its result.

    With ``markdown``, each part's printed table is also kept there, headed by the conditions
    taken as the part started (``fieldlens bench --markdown PATH``)."""
    from fieldlens_bench.common import Machine
    from fieldlens_bench.markdown import Conditions, Section, captured

    chosen = [part for part in PARTS if only in (None, part)]
    check_installed(chosen)
    machine = Machine.here()
    emit(f"fieldlens bench on {machine.describe()}")
    results: dict[str, Result] = {}
    for part in chosen:
        module = load(part)
        conditions = Conditions.now(machine, markdown.command) if markdown is not None else None
        results[part] = module.run(options)
        if markdown is None or conditions is None:
            module.report(results[part])
        else:
            markdown.add(Section(part, conditions, captured(functools.partial(module.report, results[part]))))
    return results


def load(part: str) -> ModuleType:
    """A part's module, imported only now: its imports (numpy, psutil, torch) are its own."""
    return importlib.import_module(PARTS[part].module)


def as_json(results: dict[str, Result]) -> dict[str, Any]:
    """What ``--json`` writes: each part's figures under its name."""
    return {part: result.as_json() for part, result in results.items()}
