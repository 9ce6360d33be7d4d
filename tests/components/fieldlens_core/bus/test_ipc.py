"""IpcBus against a fake GreengrassCoreIPCClientV2 fed with real awsiot model objects."""

from __future__ import annotations

from typing import Any

from awsiot.greengrasscoreipc.model import (
    BinaryMessage,
    IoTCoreMessage,
    JsonMessage,
    MessageContext,
    MQTTMessage,
    SubscriptionResponseMessage,
)

from fieldlens_core.bus.ipc import IpcBus


class Operation:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.handlers: dict[str, Any] = {}
        self.operations: list[Operation] = []

    def publish_to_iot_core(self, **kwargs: Any) -> None:
        self.calls.append(("publish_to_iot_core", kwargs))

    def publish_to_topic(self, **kwargs: Any) -> None:
        self.calls.append(("publish_to_topic", kwargs))

    def _subscribe(self, name: str, key: str, kwargs: dict[str, Any]) -> tuple[None, Operation]:
        self.calls.append((name, kwargs))
        self.handlers[kwargs[key]] = kwargs["on_stream_event"]
        self.operations.append(Operation())
        return None, self.operations[-1]

    def subscribe_to_iot_core(self, **kwargs: Any) -> tuple[None, Operation]:
        return self._subscribe("subscribe_to_iot_core", "topic_name", kwargs)

    def subscribe_to_topic(self, **kwargs: Any) -> tuple[None, Operation]:
        return self._subscribe("subscribe_to_topic", "topic", kwargs)


def test_iot_core_scope_publishes_at_least_once_through_the_mqtt_proxy() -> None:
    client = FakeClient()
    IpcBus(client, "iot_core").publish("/response/prediction/x", b"{}")
    assert client.calls == [
        ("publish_to_iot_core", {"topic_name": "/response/prediction/x", "qos": "1", "payload": b"{}"})
    ]


def test_iot_core_messages_reach_the_handler() -> None:
    client, got = FakeClient(), []
    bus = IpcBus(client, "iot_core")
    bus.subscribe("/request/classify/x", lambda t, p: got.append((t, p)))
    message = IoTCoreMessage(message=MQTTMessage(topic_name="/request/classify/x", payload=b'{"top_k": 1}'))
    client.handlers["/request/classify/x"](message)
    assert got == [("/request/classify/x", b'{"top_k": 1}')]
    assert client.calls[0][1]["qos"] == "1"


def test_local_scope_uses_local_pubsub_with_binary_and_json_messages() -> None:
    client, got = FakeClient(), []
    bus = IpcBus(client, "local")
    bus.publish("local/out", b"abc")
    name, kwargs = client.calls[0]
    assert name == "publish_to_topic" and kwargs["publish_message"].binary_message.message == b"abc"

    bus.subscribe("local/in", lambda t, p: got.append((t, p)))
    handler = client.handlers["local/in"]
    handler(
        SubscriptionResponseMessage(
            binary_message=BinaryMessage(message=b"raw", context=MessageContext(topic="local/in"))
        )
    )
    handler(
        SubscriptionResponseMessage(
            json_message=JsonMessage(message={"a": 1}, context=MessageContext(topic="local/in"))
        )
    )
    assert got == [("local/in", b"raw"), ("local/in", b'{"a": 1}')]


def test_a_failing_handler_does_not_escape_into_the_ipc_stream() -> None:
    client = FakeClient()
    bus = IpcBus(client, "iot_core")

    def broken(topic: str, payload: bytes) -> None:
        raise ValueError("bug")

    bus.subscribe("/t", broken)
    client.handlers["/t"](IoTCoreMessage(message=MQTTMessage(topic_name="/t", payload=b"")))  # must not raise


def test_stop_closes_every_stream_once() -> None:
    client = FakeClient()
    bus = IpcBus(client)
    bus.subscribe("/a", lambda t, p: None)
    bus.subscribe("/b", lambda t, p: None)
    bus.stop()
    bus.stop()
    assert [op.closed for op in client.operations] == [True, True]
