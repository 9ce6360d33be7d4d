"""`fieldlens bench`, the command: its flags become the bench's options, and a missing extra is one line."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from fieldlens_bench.common import Result
from fieldlens_cli import main as cli
from fieldlens_core.errors import ExitCode


def test_without_psutil_it_says_in_one_line_how_to_install_the_bench_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "psutil", None)  # what a plain install has: `import psutil` fails
    assert cli.main(["bench", "--only", "edge", "--data-dir", str(tmp_path / "data")]) == ExitCode.FAILED
    captured = capsys.readouterr()
    assert captured.err == (
        "fieldlens bench: psutil is not installed. Install what the bench needs: pip install 'fieldlens[bench]' "
        "(exit 1)\n"
    )
    assert captured.out == ""  # checked before anything ran
    assert not (tmp_path / "data").exists()


@dataclass(frozen=True)
class Counted(Result):
    images: int


def test_a_part_that_needs_nothing_missing_runs_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """psutil is the edge and continuous parts' need, not every part's; the part's result is what --json writes."""
    from fieldlens_bench import runner

    loaded = []

    def load(part: str) -> ModuleType:
        loaded.append(part)
        stand_in = ModuleType(part)  # a part that measures nothing
        stand_in.run = lambda options: Counted(images=options.label_images)  # type: ignore[attr-defined]
        stand_in.report = lambda result: None  # type: ignore[attr-defined]
        return stand_in

    monkeypatch.setitem(sys.modules, "psutil", None)
    monkeypatch.setattr(runner, "load", load)
    written = tmp_path / "bench.json"
    assert cli.main(["bench", "--only", "label", "--data-dir", str(tmp_path), "--json", str(written)]) == ExitCode.OK
    assert loaded == ["label"]
    assert capsys.readouterr().out.startswith("fieldlens bench on ")
    assert json.loads(written.read_text()) == {"label": {"images": 100_000}}


def test_markdown_writes_the_printed_table_headed_by_the_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``--markdown PATH``: what the part printed, under its name, the machine, the date and the command."""
    from fieldlens_bench import runner

    def load(part: str) -> ModuleType:
        stand_in = ModuleType(part)
        stand_in.run = lambda options: Counted(images=options.label_images)  # type: ignore[attr-defined]
        stand_in.report = lambda result: print(f"| images | {result.images:,} |")  # type: ignore[attr-defined]
        return stand_in

    monkeypatch.setattr(runner, "load", load)
    written = tmp_path / "bench.md"
    argv = ["bench", "--only", "label", "--data-dir", str(tmp_path), "--markdown", str(written)]
    monkeypatch.setattr(sys, "argv", ["/somewhere/.venv/bin/fieldlens", *argv])
    assert cli.main(argv) == ExitCode.OK
    assert "| images | 100,000 |" in capsys.readouterr().out  # printed as before
    heading, measured, table = written.read_text().split("\n\n")[:3]
    assert heading == "### label"
    assert measured.startswith("Measured on ") and " UTC; `fieldlens bench --only label --data-dir " in measured
    assert measured.endswith(f"--markdown {written}`.")
    assert table == "| images | 100,000 |\n"  # the file ends with a newline
