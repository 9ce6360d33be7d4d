"""`--markdown`: each part's printed table as a README section, headed by the machine, the date and the command."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from fieldlens_bench import edge
from fieldlens_bench.common import Machine
from fieldlens_bench.markdown import Conditions, MarkdownLog, Section, as_markdown, captured, render
from tests.components.fieldlens_bench.test_edge import edge_result

XEON = Machine(arch="x86_64", cpu_model="AMD EPYC 7B13", cpus=2, flags=("avx2", "fma"))
STARTED = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


def conditions(machine: Machine = XEON, machine_cpus: int | None = 2) -> Conditions:
    return Conditions(machine, machine_cpus, STARTED, (0.52, 0.4, 0.31), "fieldlens bench --only edge --markdown b.md")


def test_the_heading_names_the_cpu_its_flags_the_cpus_the_load_the_date_and_the_command() -> None:
    assert conditions().heading() == (
        "Measured on AMD EPYC 7B13 (x86_64; avx2, fma; no avx512f, avx512_vnni, avx_vnni), 2 CPUs, "
        "load average 0.52 / 0.40 / 0.31 at the start; 2026-11-24 09:30 UTC; "
        "`fieldlens bench --only edge --markdown b.md`."
    )


def test_a_run_narrowed_to_fewer_cpus_says_of_how_many() -> None:
    assert ", 1 of 4 CPUs," in conditions(Machine("x86_64", "Xeon", 1, ("avx2",)), machine_cpus=4).heading()


def test_on_arm_the_missing_flags_named_are_arms() -> None:
    pi4 = Machine(arch="aarch64", cpu_model="Cortex-A72", cpus=4, flags=("asimd",))
    assert "(aarch64; asimd; no asimddp, i8mm)" in conditions(pi4, machine_cpus=4).heading()


def test_the_edge_section_is_the_printed_table_under_its_heading(capsys: pytest.CaptureFixture[str]) -> None:
    lines = captured(lambda: edge.report(edge_result(baseline=True)))
    assert capsys.readouterr().out.splitlines() == list(lines)  # the terminal still shows it
    text = render([Section("edge", conditions(), lines)])
    blocks = text.split("\n\n")
    assert blocks[0] == "### edge"
    assert blocks[1].startswith("Measured on AMD EPYC 7B13")
    table = blocks[2].splitlines()
    assert table[0] == "| measure: median (min-max) over 3 runs | result | target |"
    assert "| end-to-end p50 over the floor | 6.50 (6.00-7.50) ms | <= 3.0 ms |" in table
    assert all(row.startswith("| ") for row in table)  # one table, no line run into it
    assert blocks[3].startswith("CPU time per request during the burst: inference 23.00 ms")


def test_lines_printed_one_after_another_become_paragraphs_and_tables_stay_whole() -> None:
    assert as_markdown(["", "first line", "second line", "| a | b |", "| --- | --- |", "after", ""]) == [
        "first line",
        "",
        "second line",
        "",
        "| a | b |",
        "| --- | --- |",
        "",
        "after",
    ]


def test_the_file_is_rewritten_after_each_part_in_the_order_they_ran(tmp_path: Path) -> None:
    log = MarkdownLog(tmp_path / "bench.md", "fieldlens bench")
    log.add(Section("upload", conditions(), ("| x | 1 |",)))
    assert (tmp_path / "bench.md").read_text().startswith("### upload\n")
    log.add(Section("retrain", conditions(), ("| y | 2 |",)))
    text = (tmp_path / "bench.md").read_text()
    assert text.index("### upload") < text.index("### retrain")
    assert text.count("Measured on ") == 2
