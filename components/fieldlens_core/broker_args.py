"""How a component starts: on a Greengrass core through IPC, elsewhere with MQTT broker flags."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from fieldlens_core.bus import Bus
from fieldlens_core.bus.mqtt import MqttBus
from fieldlens_core.component_config import on_greengrass, resolve_config
from fieldlens_core.config import DEFAULT_BROKER_URL, BrokerConfig, validate_config
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


def set_up_component(
    model: type[M], flags: dict[str, Any], args: argparse.Namespace, client_id: Callable[[M], str]
) -> ComponentSetup[M]:
    """Raises ConfigurationError (exit 2 in main) or ConnectionError (exit 1)."""
    if on_greengrass():
        from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

        from fieldlens_core.bus.ipc import IpcBus

        ipc = GreengrassCoreIPCClientV2()
        greengrass = GreengrassConfiguration(ipc, model, flags)
        config = resolve_config(model, flags, greengrass=greengrass)
        return ComponentSetup(config, IpcBus(ipc, getattr(config, "bus_scope", "iot_core")), greengrass)
    config = resolve_config(model, flags, getattr(args, "config", None))
    return ComponentSetup(config, connect_broker(args, client_id(config)), None)
