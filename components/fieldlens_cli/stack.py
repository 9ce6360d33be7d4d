"""The whole edge path on this machine: a broker, the component processes, a client bus.

`fieldlens demo`, `demo --loop` and `bench` each need the same thing: start a local broker,
start the inference service, the classifier and (optionally) the uploader as the real
component processes, connect a client, and take everything down again whatever happens.
:func:`local_stack` is that one sequence.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fieldlens_cli.brokers import local_broker
from fieldlens_cli.requester import Requester
from fieldlens_cli.supervisor import Child, ServeOptions, start_components, stop_children
from fieldlens_core import topics
from fieldlens_core.bus.mqtt import MqttBus
from fieldlens_core.config import BrokerConfig, validate_config


def connect(broker: str | BrokerConfig, role: str) -> MqttBus:
    """A client bus to a broker URL or a whole BrokerConfig (TLS, a client id, a connect timeout),
    with a fresh id unless the configuration names one (two runs of a command must not kick each
    other off). InvalidInputError for a malformed URL, BusConnectionError when it cannot connect."""
    config = broker if isinstance(broker, BrokerConfig) else validate_config(BrokerConfig, {"url": broker})
    return MqttBus(config, f"fieldlens-{role}-{uuid.uuid4().hex[:8]}").connect()


@dataclass
class LocalStack:
    url: str
    broker: str
    """The broker, in words: mosquitto's version, or the embedded one."""
    options: ServeOptions
    children: list[Child]
    bus: MqttBus
    launched_at: float
    """time.perf_counter() when the first component was started."""
    ready_at: float
    """time.perf_counter() when the last one said it was ready."""

    def requester(self) -> Requester:
        """Requests on the stack's named topic, answers read from its paired response topic."""
        requester = Requester(
            self.bus, topics.request_topic(self.options.name), topics.response_topic(self.options.name)
        )
        requester.listen()
        return requester


@contextlib.contextmanager
def local_stack(
    options_for: Callable[[str], ServeOptions],
    role: str,
    port: int | None = None,
    prefer_mosquitto: bool = False,
) -> Iterator[LocalStack]:
    """Broker, components (configured by ``options_for(broker_url)``) and a client bus named for
    ``role``; all stopped on exit, the components before the broker. Raises ChildFailedError
    when a component does not start."""
    with (
        tempfile.TemporaryDirectory(prefix="fieldlens-broker-") as scratch,
        local_broker(Path(scratch), port, prefer_mosquitto) as (url, description),
    ):
        options = options_for(url)
        bus = connect(url, role)
        children: list[Child] = []
        try:
            launched = time.perf_counter()
            children = start_components(options)
            yield LocalStack(url, description, options, children, bus, launched, time.perf_counter())
        finally:
            bus.stop()
            stop_children(children)
