"""A real small disk for full-disk tests: a 1 MiB tmpfs, filled to its last byte on demand.

Mounting needs root; where it is refused the test is skipped with the reason. Shared by the
uploader's and the labelling page's full-disk tests, so both fill a disk the same way.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_disk(where: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted at ``where`` for the block; unmounted after, whatever happens."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip() or 'not root'})")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)
        assert not os.path.ismount(where)


def fill(disk: Path) -> None:
    """Take every block left on ``disk`` (whole blocks, then single bytes), and check nothing fits."""
    with (disk / "filler").open("wb", buffering=0) as filler:
        for size in (4096, 1):
            try:
                while True:
                    filler.write(b"\0" * size)
            except OSError:
                pass
    with pytest.raises(OSError):
        (disk / "probe").write_bytes(b"x" * 4096)
