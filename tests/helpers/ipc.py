"""A stand-in for ``GreengrassCoreIPCClientV2`` that behaves like the real one where our code can tell.

- Every method takes exactly the real client's keyword-only parameters, with the same
  defaults (``test_fake_matches_the_real_client`` checks it against ``inspect.signature``), so
  a call the real client would refuse fails here too.
- Stream events are delivered on another thread, as the real client's executor does.
- Operations that accessControl would not allow raise the real ``UnauthorizedError``.
- Responses are the real awsiot model classes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from awsiot.greengrasscoreipc.model import (
    GetConfigurationResponse,
    PublishToIoTCoreResponse,
    PublishToTopicResponse,
    SendConfigurationValidityReportResponse,
    SubscribeToConfigurationUpdateResponse,
    SubscribeToIoTCoreResponse,
    SubscribeToTopicResponse,
    SubscribeToValidateConfigurationUpdatesResponse,
    UnauthorizedError,
)

from fieldlens_core.bus import topic_matches

FAKED_METHODS = (
    "publish_to_iot_core",
    "subscribe_to_iot_core",
    "publish_to_topic",
    "subscribe_to_topic",
    "get_configuration",
    "subscribe_to_configuration_update",
    "subscribe_to_validate_configuration_updates",
    "send_configuration_validity_report",
)


class FakeOperation:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeGreengrassIpc:
    def __init__(self, configuration: dict[str, Any] | None = None, allowed: tuple[str, ...] = ("#",)) -> None:
        """``allowed``: topic filters the component's accessControl allows (every operation)."""
        self.configuration = configuration or {}
        self.allowed = allowed
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.handlers: dict[str, Callable[[Any], None]] = {}
        self.reports: list[Any] = []
        self.operations: list[FakeOperation] = []
        self._events = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fake-ipc-events")

    # What the nucleus does with what the component sends.

    def _authorise(self, operation: str, topic: str | None) -> None:
        if topic is None or not any(topic_matches(allowed, topic) for allowed in self.allowed):
            raise UnauthorizedError(message=f"Principal fieldlens.Test is not authorized to perform {operation}")

    def _stream(self, key: str, on_stream_event: Any) -> FakeOperation:
        if on_stream_event is not None:
            self.handlers[key] = on_stream_event
        self.operations.append(FakeOperation())
        return self.operations[-1]

    def publish_to_iot_core(
        self,
        *,
        topic_name: str | None = None,
        qos: str | None = None,
        payload: bytes | str | None = None,
        retain: bool | None = None,
        user_properties: list[Any] | None = None,
        message_expiry_interval_seconds: int | None = None,
        correlation_data: bytes | str | None = None,
        response_topic: str | None = None,
        payload_format: str | None = None,
        content_type: str | None = None,
    ) -> PublishToIoTCoreResponse:
        self._authorise("aws.greengrass#PublishToIoTCore", topic_name)
        self.calls.append(
            (
                "publish_to_iot_core",
                {"topic_name": topic_name, "qos": qos, "payload": payload, "correlation_data": correlation_data},
            )
        )
        return PublishToIoTCoreResponse()

    def subscribe_to_iot_core(
        self,
        *,
        topic_name: str | None = None,
        qos: str | None = None,
        stream_handler: Any = None,
        on_stream_event: Callable[[Any], None] | None = None,
        on_stream_error: Callable[[Exception], bool] | None = None,
        on_stream_closed: Callable[[], None] | None = None,
    ) -> tuple[SubscribeToIoTCoreResponse, FakeOperation]:
        self._authorise("aws.greengrass#SubscribeToIoTCore", topic_name)
        self.calls.append(("subscribe_to_iot_core", {"topic_name": topic_name, "qos": qos}))
        return SubscribeToIoTCoreResponse(), self._stream(str(topic_name), on_stream_event)

    def publish_to_topic(self, *, topic: str | None = None, publish_message: Any = None) -> PublishToTopicResponse:
        self._authorise("aws.greengrass#PublishToTopic", topic)
        self.calls.append(("publish_to_topic", {"topic": topic, "publish_message": publish_message}))
        return PublishToTopicResponse()

    def subscribe_to_topic(
        self,
        *,
        topic: str | None = None,
        receive_mode: str | None = None,
        stream_handler: Any = None,
        on_stream_event: Callable[[Any], None] | None = None,
        on_stream_error: Callable[[Exception], bool] | None = None,
        on_stream_closed: Callable[[], None] | None = None,
    ) -> tuple[SubscribeToTopicResponse, FakeOperation]:
        self._authorise("aws.greengrass#SubscribeToTopic", topic)
        self.calls.append(("subscribe_to_topic", {"topic": topic}))
        return SubscribeToTopicResponse(), self._stream(str(topic), on_stream_event)

    def get_configuration(
        self, *, component_name: str | None = None, key_path: list[str] | None = None
    ) -> GetConfigurationResponse:
        return GetConfigurationResponse(component_name="fieldlens.Test", value=self.configuration)

    def subscribe_to_configuration_update(
        self,
        *,
        component_name: str | None = None,
        key_path: list[str] | None = None,
        stream_handler: Any = None,
        on_stream_event: Callable[[Any], None] | None = None,
        on_stream_error: Callable[[Exception], bool] | None = None,
        on_stream_closed: Callable[[], None] | None = None,
    ) -> tuple[SubscribeToConfigurationUpdateResponse, FakeOperation]:
        return SubscribeToConfigurationUpdateResponse(), self._stream("configuration-update", on_stream_event)

    def subscribe_to_validate_configuration_updates(
        self,
        *,
        stream_handler: Any = None,
        on_stream_event: Callable[[Any], None] | None = None,
        on_stream_error: Callable[[Exception], bool] | None = None,
        on_stream_closed: Callable[[], None] | None = None,
    ) -> tuple[SubscribeToValidateConfigurationUpdatesResponse, FakeOperation]:
        return SubscribeToValidateConfigurationUpdatesResponse(), self._stream(
            "validate-configuration", on_stream_event
        )

    def send_configuration_validity_report(
        self, *, configuration_validity_report: Any = None
    ) -> SendConfigurationValidityReportResponse:
        self.reports.append(configuration_validity_report)
        return SendConfigurationValidityReportResponse()

    # What the test does: play the nucleus's side of a stream.

    def emit(self, key: str, event: Any) -> str:
        """Deliver ``event`` to the stream ``key`` (a topic, "configuration-update" or
        "validate-configuration") on the event thread, wait for the handler, and return the
        name of the thread it ran on."""

        def run() -> str:
            self.handlers[key](event)
            return threading.current_thread().name

        return self._events.submit(run).result(timeout=10)

    def close(self) -> None:
        self._events.shutdown(wait=True)
