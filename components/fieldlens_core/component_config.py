"""Where a component's configuration comes from: the nucleus on a Greengrass core, a file and flags elsewhere."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from fieldlens_core.config import load_config_file, merge_config, validate_config
from fieldlens_core.greengrass_config import GreengrassConfiguration

M = TypeVar("M", bound=BaseModel)

NUCLEUS_SOCKET_ENV = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"


def on_greengrass() -> bool:
    """True inside a component the nucleus started (it sets the IPC socket path)."""
    return NUCLEUS_SOCKET_ENV in os.environ


def resolve_config(
    model: type[M],
    flags: dict[str, Any],
    config_file: str | None = None,
    greengrass: GreengrassConfiguration[M] | None = None,
) -> M:
    """Flags win over the file or the nucleus; raises ConfigurationError naming each bad key."""
    if greengrass is not None:
        return greengrass.load()
    raw = load_config_file(Path(config_file)) if config_file else {}
    return validate_config(model, merge_config(model, raw, flags))


def given_flags(namespace: Any, skip: tuple[str, ...] = ("config",)) -> dict[str, Any]:
    """The argparse values the user actually gave (argparse leaves the others None)."""
    return {k: v for k, v in vars(namespace).items() if v is not None and k not in skip}
