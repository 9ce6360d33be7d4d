"""What the CLI shows the person at the terminal (stdout). Diagnostics go through logging (stderr)."""

from __future__ import annotations

import sys


def emit(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
