"""The layers import downwards only: core <- field data, samples <- training; core <- components <- cli.

The bench (fieldlens_bench) stands beside the CLI at the top: it may import anything, and nothing
imports it but the CLI's thin ``bench`` command, so no product code depends on a measurement.

Read from the source (every import statement, lazy ones inside functions included), so a
training module that reaches into a component, or a component into the CLI, fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "fieldlens_core": {"fieldlens_core"},
    "fieldlens_fielddata": {"fieldlens_core", "fieldlens_fielddata"},
    "fieldlens_samples": {"fieldlens_core", "fieldlens_samples"},
    "fieldlens_retrain": {"fieldlens_core", "fieldlens_fielddata", "fieldlens_samples", "fieldlens_retrain"},
    "fieldlens_labelling": {"fieldlens_core", "fieldlens_fielddata", "fieldlens_retrain", "fieldlens_labelling"},
    "fieldlens_inference": {"fieldlens_core", "fieldlens_inference"},
    "fieldlens_classifier": {"fieldlens_core", "fieldlens_fielddata", "fieldlens_classifier"},
    "fieldlens_uploader": {"fieldlens_core", "fieldlens_fielddata", "fieldlens_uploader"},
    "fieldlens_lambda_v1": {"fieldlens_core", "fieldlens_fielddata", "fieldlens_classifier", "fieldlens_lambda_v1"},
    "fieldlens_infra": {"fieldlens_core", "fieldlens_infra"},
}
"""What each package may import from the project (the CLI and the bench, at the top, may import anything)."""

PACKAGES = sorted(p for base in ("components", "field_data", "infra") for p in (ROOT / base).glob("fieldlens_*"))
TOP = {"fieldlens_cli", "fieldlens_bench"}
BENCH_COMMAND = ROOT / "components" / "fieldlens_cli" / "bench.py"
"""The one module outside the bench that may import it."""


def project_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return {name for name in names if name.startswith("fieldlens_")}


def test_every_package_has_a_layer() -> None:
    assert {p.name for p in PACKAGES} - TOP == set(ALLOWED)


@pytest.mark.parametrize("package", [p for p in PACKAGES if p.name in ALLOWED], ids=lambda p: p.name)
def test_imports_go_downwards_only(package: Path) -> None:
    upward = {
        f"{module.relative_to(ROOT)} imports {name}"
        for module in package.rglob("*.py")
        for name in project_imports(module) - ALLOWED[package.name]
    }
    assert not upward, sorted(upward)


def test_nothing_imports_the_bench_but_the_bench_command() -> None:
    importers = {
        str(module.relative_to(ROOT))
        for package in PACKAGES
        if package.name != "fieldlens_bench"
        for module in package.rglob("*.py")
        if "fieldlens_bench" in project_imports(module)
    }
    assert importers == {str(BENCH_COMMAND.relative_to(ROOT))}
