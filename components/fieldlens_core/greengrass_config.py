"""Component configuration from the Greengrass nucleus, validated before it is accepted.

A deployment's configuration merge is first offered for validation: we validate it with the
component's pydantic model and answer ACCEPTED or REJECTED (with the reason, which shows in
the deployment's status), so a bad merge fails the deployment instead of breaking devices.
Accepted updates are then re-read and handed to the component.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from awsiot.greengrasscoreipc.model import (
    ConfigurationUpdateEvents,
    ConfigurationValidityReport,
    ConfigurationValidityStatus,
    ValidateConfigurationUpdateEvents,
)
from pydantic import BaseModel

from fieldlens_core.config import merge_config, validate_config
from fieldlens_core.errors import ConfigurationError

log = logging.getLogger(__name__)

# Keys the nucleus keeps in every component's configuration that are not ours to validate.
GREENGRASS_RESERVED_KEYS = frozenset({"accessControl"})

M = TypeVar("M", bound=BaseModel)


def _own_keys(raw: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (raw or {}).items() if k not in GREENGRASS_RESERVED_KEYS}


def _stream_error(error: Exception) -> bool:
    """A configuration stream's error: logged, and the stream kept (False), so updates keep coming."""
    log.error("configuration stream error: %s", error)
    return False


class GreengrassConfiguration(Generic[M]):
    def __init__(self, client: Any, model: type[M], overrides: dict[str, Any] | None = None) -> None:
        """``overrides`` (the Run step's flags) win over the nucleus's configuration, in loads and validations."""
        self.client = client  # the IPC client, which the IPC bus shares
        self._model = model
        self._overrides = overrides or {}
        self._operations: list[Any] = []

    def load(self) -> M:
        """This component's whole configuration, validated; ConfigurationError when it does not validate."""
        response = self.client.get_configuration(key_path=[])
        return validate_config(self._model, merge_config(self._model, _own_keys(response.value), self._overrides))

    def watch(self, on_change: Callable[[M], None]) -> None:
        """Validate proposed updates (ACCEPTED/REJECTED) and pass accepted ones to ``on_change``."""
        _, validation = self.client.subscribe_to_validate_configuration_updates(
            on_stream_event=self._on_validate, on_stream_error=_stream_error
        )

        def on_update(event: ConfigurationUpdateEvents) -> None:
            try:
                config = self.load()
            except ConfigurationError as exc:  # validated already, so only a race gets here
                log.error("ignoring configuration update: %s", exc)
                return
            on_change(config)

        _, updates = self.client.subscribe_to_configuration_update(
            key_path=[], on_stream_event=on_update, on_stream_error=_stream_error
        )
        self._operations = [validation, updates]

    def _on_validate(self, event: ValidateConfigurationUpdateEvents) -> None:
        proposal = event.validate_configuration_update_event
        try:
            validate_config(self._model, merge_config(self._model, _own_keys(proposal.configuration), self._overrides))
            status, message = ConfigurationValidityStatus.ACCEPTED, "configuration is valid"
        except ConfigurationError as exc:
            status, message = ConfigurationValidityStatus.REJECTED, str(exc)
        log.info("configuration proposal of deployment %s: %s (%s)", proposal.deployment_id, status, message)
        self.client.send_configuration_validity_report(
            configuration_validity_report=ConfigurationValidityReport(
                status=status, deployment_id=proposal.deployment_id, message=message
            )
        )

    def stop(self) -> None:
        for operation in self._operations:
            try:
                operation.close()
            except Exception:
                log.debug("closing a configuration stream failed", exc_info=True)
