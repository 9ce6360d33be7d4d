"""How a component starts: on a Greengrass core through IPC, elsewhere with MQTT broker flags."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from fieldlens_core.bus import Bus
from fieldlens_core.bus.mqtt import MqttBus
from fieldlens_core.component_config import NUCLEUS_SOCKET_ENV, on_greengrass, resolve_config
from fieldlens_core.config import DEFAULT_BROKER_URL, BrokerConfig, validate_config
from fieldlens_core.errors import NucleusConnectionError
from fieldlens_core.greengrass_config import GreengrassConfiguration

M = TypeVar("M", bound=BaseModel)

BROKER_FLAGS = ("broker", "client_id", "ca_file", "cert_file", "key_file")


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", help=f"MQTT broker URL off a Greengrass core (default {DEFAULT_BROKER_URL})")
    parser.add_argument("--client-id", dest="client_id", help="MQTT client id")
    parser.add_argument("--ca", dest="ca_file", help="CA bundle for mqtts:// (AmazonRootCA1.pem)")
    parser.add_argument("--cert", dest="cert_file", help="device certificate for mqtts://")
    parser.add_argument("--key", dest="key_file", help="device private key for mqtts://")


def connect_broker(args: argparse.Namespace, client_id: str) -> MqttBus:
    """Connect to the broker the flags name; raises ConfigurationError or BusConnectionError."""
    raw = {k: getattr(args, k) for k in BROKER_FLAGS if getattr(args, k, None) is not None}
    raw["url"] = raw.pop("broker", DEFAULT_BROKER_URL)
    return MqttBus(validate_config(BrokerConfig, raw), client_id).connect()


class ComponentSetup(Generic[M]):
    """What a component's main() needs first: its validated configuration and its bus.

    On a Greengrass core: IPC for both (``greengrass`` is then set, for live configuration
    updates); elsewhere: the configuration file and flags, and paho-mqtt to ``--broker``.
    """

    def __init__(self, config: M, bus: Bus, greengrass: GreengrassConfiguration[M] | None) -> None:
        self.config, self.bus, self.greengrass = config, bus, greengrass


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
        raise NucleusConnectionError(
            f"cannot connect to the Greengrass nucleus's IPC socket {socket_path!r}: {exc}. Is the nucleus "
            f"running, and was this process started by it?"
        ) from None


def set_up_component(
    model: type[M], flags: dict[str, Any], args: argparse.Namespace, client_id: Callable[[M], str]
) -> ComponentSetup[M]:
    """Raises ConfigurationError, NucleusConnectionError or BusConnectionError (see errors.EXIT_*)."""
    if on_greengrass():
        from fieldlens_core.bus.ipc import IpcBus

        ipc = connect_nucleus()
        greengrass = GreengrassConfiguration(ipc, model, flags)
        config = resolve_config(model, flags, greengrass=greengrass)
        return ComponentSetup(config, IpcBus(ipc, getattr(config, "bus_scope", "iot_core")), greengrass)
    config = resolve_config(model, flags, getattr(args, "config", None))
    return ComponentSetup(config, connect_broker(args, client_id(config)), None)
