"""GreengrassConfiguration against a fake IPC client that records calls and returns real awsiot model objects."""

from __future__ import annotations

from typing import Any

from awsiot.greengrasscoreipc.model import (
    ConfigurationUpdateEvent,
    ConfigurationUpdateEvents,
    ValidateConfigurationUpdateEvent,
    ValidateConfigurationUpdateEvents,
)

from fieldlens_classifier.config import ClassifierConfig
from fieldlens_core.greengrass_config import GreengrassConfiguration
from tests.helpers.ipc import FakeGreengrassIpc


class FakeIpcClient(FakeGreengrassIpc):
    """The shared stand-in; events are sent on its own thread, as the real client does."""

    def __init__(self, configuration: dict[str, Any]) -> None:
        super().__init__(configuration)


def propose(client: FakeIpcClient, configuration: dict[str, Any]) -> Any:
    event = ValidateConfigurationUpdateEvent(configuration=configuration, deployment_id="dep-1")
    client.emit("validate-configuration", ValidateConfigurationUpdateEvents(validate_configuration_update_event=event))
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
    client.emit(
        "configuration-update",
        ConfigurationUpdateEvents(configuration_update_event=ConfigurationUpdateEvent(key_path=["defaultTopK"])),
    )
    assert [c.default_top_k for c in received] == [4]
    configuration.stop()
