"""Crash-safe file writes: temporary file in the same directory, fsync, rename, fsync the directory.

After a crash (power cut, kill -9) a reader sees either the old file or the whole new one,
never a torn write; leftover ``.tmp`` files are ignored by readers and cleaned up by owners.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, durable: bool = True, sync_directory: bool = True) -> None:
    """Write ``data`` to ``path`` atomically.

    ``durable=False`` skips the fsyncs: the rename is still atomic against a process crash
    (kill -9), and the caller takes over durability against power loss (see FieldStore's
    group commit).
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}{TEMP_SUFFIX}")
    try:
        with temporary.open("wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if durable and sync_directory:
        fsync_directory(path.parent)
