"""Untrusted names that become local paths: the one place that refuses escapes.

S3 keys (any device's token-exchange role can write one), model-card file names and image ids
are data from elsewhere. A name such as ``../../etc/cron.d/x`` joined onto a directory writes
outside it; every such join goes through :func:`resolve_inside` or :func:`plain_name`.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from fieldlens_core.errors import ErrorCode, ExitCode, FieldlensError


class UnsafePathError(FieldlensError):
    """A name that would leave the directory it belongs in, or is not a plain file name."""

    code = ErrorCode.BAD_REQUEST
    exit_code = ExitCode.INVALID_INPUT


def plain_name(name: str) -> str:
    """``name`` if it is one ordinary file name (no separator, not ``.`` or ``..``, no NUL), else raise."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\x00"):
        raise UnsafePathError(f"{name!r} is not a plain file name")
    return name


def resolve_inside(root: Path, name: str) -> Path:
    """``root / name`` when it stays inside ``root`` (after resolving links), else raise UnsafePathError.

    ``name`` is a relative, '/'-separated path (an S3 key, say); absolute names, ``..`` and
    empty levels are refused outright, and the resolved path is checked as well, so a symbolic
    link inside ``root`` cannot lead out either.
    """
    parts = PurePosixPath(name).parts
    if not name or "\x00" in name or name.startswith("/") or any(p in ("..", ".") for p in name.split("/")):
        raise UnsafePathError(f"{name!r} would leave {root}")
    target = root.joinpath(*parts)
    if not target.resolve().is_relative_to(root.resolve()):
        raise UnsafePathError(f"{name!r} would leave {root}")
    return target
