"""IpcBus against a stand-in for GreengrassCoreIPCClientV2 fed with real awsiot model objects."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator

import pytest
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc.model import (
    BinaryMessage,
    IoTCoreMessage,
    JsonMessage,
    MessageContext,
    MQTTMessage,
    SubscriptionResponseMessage,
)

from fieldlens_core.bus import Message
from fieldlens_core.bus.ipc import IpcBus
from fieldlens_core.errors import BusAuthorizationError
from tests.helpers.ipc import FAKED_METHODS, FakeGreengrassIpc


@pytest.fixture
def client() -> Iterator[FakeGreengrassIpc]:
    fake = FakeGreengrassIpc()
    yield fake
    fake.close()


@pytest.mark.parametrize("method", FAKED_METHODS)
def test_fake_matches_the_real_client(method: str) -> None:
    """Same keyword-only parameters, in the same order, with the same defaults: a call that the real
    client would refuse (a misspelt or positional argument) fails against the fake too."""

    def shape(function: object) -> list[tuple[str, object, object]]:
        parameters = inspect.signature(function).parameters.values()  # type: ignore[arg-type]
        return [(p.name, p.kind, p.default) for p in parameters]

    assert shape(getattr(FakeGreengrassIpc, method)) == shape(getattr(GreengrassCoreIPCClientV2, method))


def test_iot_core_scope_publishes_at_least_once_with_correlation_data(client: FakeGreengrassIpc) -> None:
    IpcBus(client, "iot_core").publish("/response/prediction/x", b"{}", correlation_data=b"c-1")
    assert client.calls == [
        (
            "publish_to_iot_core",
            {"topic_name": "/response/prediction/x", "qos": "1", "payload": b"{}", "correlation_data": b"c-1"},
        )
    ]


def test_iot_core_messages_arrive_on_the_clients_thread_with_their_mqtt5_properties(
    client: FakeGreengrassIpc,
) -> None:
    got: list[tuple[Message, str]] = []
    bus = IpcBus(client, "iot_core")
    bus.subscribe("/request/classify/x", lambda m: got.append((m, threading.current_thread().name)))
    mqtt = MQTTMessage(
        topic_name="/request/classify/x",
        payload=b'{"top_k": 1}',
        retain=True,
        response_topic="/response/console",
        correlation_data=b"abc",
    )
    client.emit("/request/classify/x", IoTCoreMessage(message=mqtt))
    message, thread = got[0]
    assert message == Message("/request/classify/x", b'{"top_k": 1}', True, "/response/console", b"abc")
    assert thread != threading.current_thread().name
    assert client.calls[0] == ("subscribe_to_iot_core", {"topic_name": "/request/classify/x", "qos": "1"})


def test_local_scope_uses_local_pubsub_with_binary_and_json_messages(client: FakeGreengrassIpc) -> None:
    got: list[Message] = []
    bus = IpcBus(client, "local")
    bus.publish("local/out", b"abc")
    name, kwargs = client.calls[0]
    assert name == "publish_to_topic" and kwargs["publish_message"].binary_message.message == b"abc"

    bus.subscribe("local/in", got.append)
    client.emit(
        "local/in",
        SubscriptionResponseMessage(
            binary_message=BinaryMessage(message=b"raw", context=MessageContext(topic="local/in"))
        ),
    )
    client.emit(
        "local/in",
        SubscriptionResponseMessage(
            json_message=JsonMessage(message={"a": 1}, context=MessageContext(topic="local/in"))
        ),
    )
    assert [(m.topic, m.payload) for m in got] == [("local/in", b"raw"), ("local/in", b'{"a": 1}')]


def test_a_failing_handler_does_not_escape_into_the_ipc_stream(client: FakeGreengrassIpc) -> None:
    bus = IpcBus(client, "iot_core")

    def broken(message: Message) -> None:
        raise ValueError("bug")

    bus.subscribe("/t", broken)
    client.emit("/t", IoTCoreMessage(message=MQTTMessage(topic_name="/t", payload=b"")))  # must not raise


@pytest.mark.parametrize(
    ("scope", "service", "operation"),
    [
        ("iot_core", "aws.greengrass.ipc.mqttproxy", "aws.greengrass#SubscribeToIoTCore"),
        ("local", "aws.greengrass.ipc.pubsub", "aws.greengrass#SubscribeToTopic"),
    ],
)
def test_an_unauthorised_subscribe_names_the_access_control_entry_to_add(
    scope: str, service: str, operation: str
) -> None:
    client = FakeGreengrassIpc(allowed=("/request/classify/beverage_container",))
    try:
        with pytest.raises(BusAuthorizationError) as raised:
            IpcBus(client, scope).subscribe("/request/classify/hens", lambda m: None)  # type: ignore[arg-type]
        assert service in raised.value.message and operation in raised.value.message
        assert "'/request/classify/hens'" in raised.value.message and raised.value.exit_code == 4
    finally:
        client.close()


def test_an_unauthorised_publish_is_a_clear_error_too() -> None:
    client = FakeGreengrassIpc(allowed=("/request/#",))
    try:
        with pytest.raises(BusAuthorizationError, match="PublishToIoTCore"):
            IpcBus(client, "iot_core").publish("/response/elsewhere", b"{}")
    finally:
        client.close()


def test_stop_closes_every_stream_once(client: FakeGreengrassIpc) -> None:
    bus = IpcBus(client)
    bus.subscribe("/a", lambda m: None)
    bus.subscribe("/b", lambda m: None)
    bus.stop()
    bus.stop()
    assert [op.closed for op in client.operations] == [True, True]
