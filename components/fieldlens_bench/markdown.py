"""`fieldlens bench --markdown PATH`: the tables of the parts that ran, as a README section.

A benchmark figure means little without the machine, the day and the command behind it, and a
README table pasted by hand loses them. So each part's section is headed by where, when and how
it was measured (the CPU, the flags that decide inference speed and int8 exactness, the CPUs the
run had, the load average as the part started, the date, the command line), and its body is
exactly the lines the part's ``report`` printed on the terminal: one formatter for the screen and
the file, so the two cannot disagree. Regenerating a folder README's table is one command and a
paste; its history is in git.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from fieldlens_bench.common import Machine

KEY_FLAGS = {
    "x86": ("avx2", "avx512f", "avx512_vnni", "avx_vnni"),
    "arm": ("asimddp", "i8mm"),
}
"""Per architecture, the flags whose absence a reader needs told too (int8 is exact with VNNI on
x86 and everywhere on ARM; the dot product and i8mm make it fast there)."""


@dataclass(frozen=True)
class Conditions:
    """Where, when and how one part was measured: the heading of its section."""

    machine: Machine
    machine_cpus: int | None
    """The machine's CPU count (``machine.cpus`` is the run's affinity, which ``--cpus`` or taskset narrow)."""
    started: datetime
    load_average: tuple[float, float, float] | None
    """At the part's start: a loaded machine's figures are not a quiet machine's."""
    command: str

    @classmethod
    def now(cls, machine: Machine, command: str) -> Conditions:
        try:
            load = os.getloadavg()
        except OSError:  # not available on this platform
            load = None
        return cls(machine, os.cpu_count(), datetime.now(UTC), load, command)

    def heading(self) -> str:
        m = self.machine
        family = "arm" if m.arch.lower().startswith(("arm", "aarch")) or "asimd" in m.flags else "x86"
        absent = [flag for flag in KEY_FLAGS[family] if flag not in m.flags]
        flags = ", ".join(m.flags) or "none of the inference flags"
        if absent:
            flags += f"; no {', '.join(absent)}"
        of = f" of {self.machine_cpus}" if self.machine_cpus and self.machine_cpus != m.cpus else ""
        load = (
            "load average " + " / ".join(f"{value:.2f}" for value in self.load_average) + " at the start"
            if self.load_average is not None
            else "load average not known"
        )
        return (
            f"Measured on {m.cpu_model} ({m.arch}; {flags}), {m.cpus}{of} CPUs, {load}; "
            f"{self.started:%Y-%m-%d %H:%M} UTC; `{self.command}`."
        )


@dataclass(frozen=True)
class Section:
    part: str
    conditions: Conditions
    lines: tuple[str, ...]
    """What the part's ``report`` printed, line by line."""


def as_markdown(lines: list[str] | tuple[str, ...]) -> list[str]:
    """A report's lines as markdown: table rows kept together, each other line its own paragraph.

    The terminal shows a line per statement; markdown would run consecutive lines into one
    paragraph, so a blank line goes between them (and around a table)."""
    out: list[str] = []
    for raw in lines:
        line = raw.rstrip()
        if not line:
            if out and out[-1]:
                out.append("")
            continue
        if out and out[-1] and not (line.startswith("|") and out[-1].startswith("|")):
            out.append("")
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return out


def render(sections: list[Section]) -> str:
    """The file: one ``### <part>`` section per part that ran, in the order they ran."""
    text: list[str] = []
    for section in sections:
        text += [f"### {section.part}", "", section.conditions.heading(), "", *as_markdown(section.lines), ""]
    return "\n".join(text)


class _Tee(io.StringIO):
    """Keeps what is written and passes it on, so the terminal still shows the table as it is printed."""

    def __init__(self, also: TextIO) -> None:
        super().__init__()
        self._also = also

    def write(self, text: str) -> int:
        self._also.write(text)
        return super().write(text)

    def flush(self) -> None:
        self._also.flush()


def captured(report: Callable[[], None]) -> tuple[str, ...]:
    """Run ``report`` (which prints to stdout) and return the lines it printed, printing them as well."""
    tee = _Tee(sys.stdout)
    with redirect_stdout(tee):
        report()
    return tuple(tee.getvalue().splitlines())


@dataclass
class MarkdownLog:
    """The sections of one run, rewritten to ``path`` after each part.

    So a later part's failure (an hour into a full run) keeps the tables of the parts before it."""

    path: Path
    command: str
    sections: list[Section] = field(default_factory=list)

    def add(self, section: Section) -> None:
        self.sections.append(section)
        self.path.write_text(render(self.sections))
