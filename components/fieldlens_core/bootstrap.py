"""How every component starts and stops: one path for the classifier, the uploader and the inference service.

Start: configuration (from the nucleus over IPC on a Greengrass core, validated; elsewhere
from ``--config`` and flags) and, for components that talk MQTT, a bus (IPC on a core,
paho-mqtt to ``--broker`` elsewhere). Stop: :func:`run_component` announces readiness, waits
for SIGTERM/SIGINT and closes what the component opened, in order, then the bus and the
configuration streams.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from fieldlens_core.bus import Bus
from fieldlens_core.config import (
    DEFAULT_BROKER_URL,
    BusSettings,
    broker_config_from,
    load_config_file,
    merge_config,
    validate_config,
)
from fieldlens_core.errors import NucleusConnectionError
from fieldlens_core.greengrass_config import GreengrassConfiguration
from fieldlens_core.lifecycle import announce_ready, wait_for_termination, watch_connection

if TYPE_CHECKING:
    from fieldlens_core.bus.mqtt import MqttBus

M = TypeVar("M", bound=BaseModel)
B = TypeVar("B", bound=BusSettings)
log = logging.getLogger(__name__)

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
    """Flags win over the file or the nucleus; raises ConfigurationError naming the file and each bad key."""
    if greengrass is not None:
        return greengrass.load()
    raw = load_config_file(Path(config_file)) if config_file else {}
    source = f"configuration {config_file} with flags" if config_file else None
    return validate_config(model, merge_config(model, raw, flags), source)


def given_flags(namespace: Any, skip: tuple[str, ...] = ("config",)) -> dict[str, Any]:
    """The argparse values the user actually gave (argparse leaves the others None)."""
    return {k: v for k, v in vars(namespace).items() if v is not None and k not in skip}


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", help=f"MQTT broker URL off a Greengrass core (default {DEFAULT_BROKER_URL})")
    parser.add_argument("--client-id", dest="client_id", help="MQTT client id")
    parser.add_argument("--ca", dest="ca_file", help="CA bundle for mqtts:// (AmazonRootCA1.pem)")
    parser.add_argument("--cert", dest="cert_file", help="device certificate for mqtts://")
    parser.add_argument("--key", dest="key_file", help="device private key for mqtts://")


def connect_broker(args: argparse.Namespace, client_id: str) -> MqttBus:
    """Connect to the broker the flags name; raises InvalidInputError, ConfigurationError or BusConnectionError."""
    from fieldlens_core.bus.mqtt import MqttBus  # paho-mqtt: the inference service's artifact does not ship it

    return MqttBus(broker_config_from(args), client_id).connect()


class ComponentSetup(Generic[M]):
    """What a component's main() needs first: its validated configuration and, if it talks MQTT, its bus.

    On a Greengrass core ``greengrass`` is set, for live configuration updates.
    """

    def __init__(self, config: M, bus: Bus | None, greengrass: GreengrassConfiguration[M] | None) -> None:
        self.config, self.bus, self.greengrass = config, bus, greengrass


class ConnectedSetup(ComponentSetup[M]):
    """A component that talks MQTT: its bus is always there."""

    bus: Bus

    def __init__(self, config: M, bus: Bus, greengrass: GreengrassConfiguration[M] | None) -> None:
        super().__init__(config, bus, greengrass)


def connect_nucleus() -> Any:
    """The IPC client, or NucleusConnectionError saying in one line what is wrong and how to fix it.

    awscrt and the SDK report these as ``KeyError: 'SVCUID'``, ``RuntimeError: 44
    (AWS_ERROR_FILE_INVALID_PATH)`` and ``AccessDeniedError``; a person reading the
    component's log needs the cause instead.
    """
    from awsiot.eventstreamrpc import AccessDeniedError
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

    socket_path = os.environ.get(NUCLEUS_SOCKET_ENV, "")
    try:
        return GreengrassCoreIPCClientV2()
    except KeyError as exc:
        raise NucleusConnectionError(
            f"{NUCLEUS_SOCKET_ENV} is set but {exc} is not: this process was not started by the Greengrass "
            f"nucleus. Run it as a component, or unset {NUCLEUS_SOCKET_ENV} to run off a device with --broker"
        ) from None
    except AccessDeniedError:
        raise NucleusConnectionError(
            "the Greengrass nucleus refused this process's IPC token (SVCUID): it belongs to another component "
            "or an earlier nucleus run; let the nucleus start the component"
        ) from None
    except Exception as exc:  # awscrt raises RuntimeError with a CRT error name
        if getattr(exc, "name", None) == "AWS_IO_SOCKET_CLOSED":
            # The nucleus closes the socket right after a refusing CONNECT_ACK: the client sees the close
            # first about one time in five, and never the AccessDeniedError (the test nucleus shows both).
            raise NucleusConnectionError(
                "the Greengrass nucleus closed the IPC connection before accepting it: it refused this "
                "process's IPC token (SVCUID), or it is stopping; let the nucleus start the component"
            ) from None
        raise NucleusConnectionError(
            f"cannot connect to the Greengrass nucleus's IPC socket {socket_path!r}: {exc}. Is the nucleus "
            f"running, and was this process started by it?"
        ) from None


def load_component_config(model: type[M], flags: dict[str, Any], config_file: str | None) -> ComponentSetup[M]:
    """The configuration alone (a component without a bus: the inference service).

    Raises ConfigurationError or NucleusConnectionError (see errors.EXIT_*).
    """
    greengrass = GreengrassConfiguration(connect_nucleus(), model, flags) if on_greengrass() else None
    return ComponentSetup(resolve_config(model, flags, config_file, greengrass), None, greengrass)


def set_up_component(
    model: type[B], flags: dict[str, Any], args: argparse.Namespace, client_id: Callable[[B], str]
) -> ConnectedSetup[B]:
    """Configuration and bus. Raises ConfigurationError, NucleusConnectionError or BusConnectionError."""
    setup = load_component_config(model, flags, getattr(args, "config", None))
    config, greengrass = setup.config, setup.greengrass
    if greengrass is not None:
        from fieldlens_core.bus.ipc import IpcBus

        return ConnectedSetup(config, IpcBus(greengrass.client, config.bus_scope), greengrass)
    return ConnectedSetup(config, connect_broker(args, client_id(config)), None)


def run_component(
    name: str,
    setup: ComponentSetup[M],
    closing: Sequence[Callable[[], None]],
    on_config_change: Callable[[M], None] | None = None,
) -> int:
    """The rest of a component's life once its service runs: watch configuration updates (on a
    core), announce the bus's connection and readiness, wait for SIGTERM/SIGINT, then call
    ``closing`` in order and stop the bus and the configuration streams. Returns the exit code."""
    if setup.greengrass is not None:
        setup.greengrass.watch(on_config_change or _restart_needed)
    if setup.bus is not None:
        watch_connection(setup.bus, name)
    announce_ready(name)
    signum = wait_for_termination()
    log.info("%s stopping on signal %d", name, signum)
    for close in closing:
        try:
            close()
        except Exception:  # one failing close must not keep the others from running
            log.exception("%s: closing failed", name)
    if setup.bus is not None:
        setup.bus.stop()
    if setup.greengrass is not None:
        setup.greengrass.stop()
    return 0


def _restart_needed(config: BaseModel) -> None:
    log.warning("configuration changed: it takes effect when the component restarts")
