"""GreengrassConfiguration against a fake IPC client that records calls and returns real awsiot model objects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from awsiot.greengrasscoreipc.model import (
    ConfigurationUpdateEvent,
    ConfigurationUpdateEvents,
    GetConfigurationResponse,
    ValidateConfigurationUpdateEvent,
    ValidateConfigurationUpdateEvents,
)

from fieldlens_classifier.config import ClassifierConfig
from fieldlens_core.greengrass_config import GreengrassConfiguration


class FakeOperation:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeIpcClient:
    def __init__(self, configuration: dict[str, Any]) -> None:
        self.configuration = configuration
        self.reports: list[Any] = []
        self.on_validate: Callable[[ValidateConfigurationUpdateEvents], None] | None = None
        self.on_update: Callable[[ConfigurationUpdateEvents], None] | None = None

    def get_configuration(self, *, component_name: str | None = None, key_path: list[str] | None = None) -> Any:
        return GetConfigurationResponse(component_name="fieldlens.Classifier", value=self.configuration)

    def subscribe_to_validate_configuration_updates(self, *, on_stream_event: Any) -> tuple[None, FakeOperation]:
        self.on_validate = on_stream_event
        return None, FakeOperation()

    def subscribe_to_configuration_update(
        self, *, key_path: list[str], on_stream_event: Any
    ) -> tuple[None, FakeOperation]:
        self.on_update = on_stream_event
        return None, FakeOperation()

    def send_configuration_validity_report(self, *, configuration_validity_report: Any) -> None:
        self.reports.append(configuration_validity_report)


def propose(client: FakeIpcClient, configuration: dict[str, Any]) -> Any:
    assert client.on_validate is not None
    event = ValidateConfigurationUpdateEvent(configuration=configuration, deployment_id="dep-1")
    client.on_validate(ValidateConfigurationUpdateEvents(validate_configuration_update_event=event))
    return client.reports[-1]


def test_loads_camel_case_configuration_and_ignores_access_control() -> None:
    client = FakeIpcClient({"name": "hens", "defaultTopK": 3, "accessControl": {"aws.greengrass.ipc.mqttproxy": {}}})
    config = GreengrassConfiguration(client, ClassifierConfig).load()
    assert (config.name, config.default_top_k) == ("hens", 3)


def test_flags_win_over_the_nucleus_configuration() -> None:
    client = FakeIpcClient({"name": "hens", "fieldDataDir": "/data/a"})
    config = GreengrassConfiguration(client, ClassifierConfig, {"field_data_dir": "/work/b"}).load()
    assert str(config.field_data_dir) == "/work/b"


def test_valid_proposals_are_accepted_and_invalid_ones_rejected_with_the_reason() -> None:
    client = FakeIpcClient({})
    configuration = GreengrassConfiguration(client, ClassifierConfig)
    configuration.watch(lambda config: None)

    accepted = propose(client, {"defaultTopK": 2})
    assert (accepted.status, accepted.deployment_id) == ("ACCEPTED", "dep-1")

    rejected = propose(client, {"defaultTopK": 0, "cameraa": {}})
    assert rejected.status == "REJECTED"
    assert "default_top_k" in rejected.message or "defaultTopK" in rejected.message
    assert "cameraa" in rejected.message


def test_accepted_updates_reach_the_component() -> None:
    client = FakeIpcClient({"defaultTopK": 2})
    received: list[ClassifierConfig] = []
    configuration = GreengrassConfiguration(client, ClassifierConfig)
    configuration.watch(received.append)
    client.configuration = {"defaultTopK": 4}
    assert client.on_update is not None
    client.on_update(
        ConfigurationUpdateEvents(configuration_update_event=ConfigurationUpdateEvent(key_path=["defaultTopK"]))
    )
    assert [c.default_top_k for c in received] == [4]
    configuration.stop()
