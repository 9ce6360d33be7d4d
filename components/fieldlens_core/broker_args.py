"""The MQTT broker flags every component takes off a Greengrass core, and the bus they connect."""

from __future__ import annotations

import argparse

from fieldlens_core.bus.mqtt import MqttBus
from fieldlens_core.config import DEFAULT_BROKER_URL, BrokerConfig, validate_config

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
