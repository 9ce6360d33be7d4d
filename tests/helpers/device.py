"""A classifier connected to the real mosquitto, with the tiny model, and an observer of every response."""

from __future__ import annotations

from pathlib import Path

from fieldlens_classifier.build import assemble_classifier
from fieldlens_classifier.config import ClassifierConfig
from fieldlens_core.bus.mqtt import MqttBus
from fieldlens_core.camera.folder import FolderCamera
from fieldlens_core.config import BrokerConfig
from fieldlens_core.inference.client import InferenceClient
from fieldlens_fielddata.store import FieldStore
from tests.helpers.broker import Mosquitto
from tests.helpers.collector import ResponseCollector
from tests.helpers.images import solid_jpeg


class Device:
    """A classifier connected to mosquitto, and an observer of every response topic."""

    def __init__(
        self, mosquitto: Mosquitto, socket_path: Path, tmp_path: Path, protocol: str = "auto", **config: object
    ) -> None:
        photos = tmp_path / "photos"
        photos.mkdir(exist_ok=True)
        (photos / "red.jpg").write_bytes(solid_jpeg((240, 10, 10)))
        self.config = ClassifierConfig.model_validate(
            {
                "thing_name": "coop-7",
                "field_data_dir": tmp_path / "field",
                "workers": 1,  # answers in arrival order, so a request that ran shows up before a later one
                "inference": {"service_name": "tiny", "socket_path": socket_path},
                **config,
            }
        )
        self._mosquitto, self._protocol, self._photos = mosquitto, protocol, photos
        self.responses = ResponseCollector()
        self._observer = MqttBus(BrokerConfig(url=mosquitto.url), "observer").connect()
        self._observer.subscribe("/response/#", self.responses)
        self.start()

    def start(self) -> None:
        config = BrokerConfig(url=self._mosquitto.url, protocol=self._protocol)
        self.bus = MqttBus(config, "classifier").connect()
        self.classifier = assemble_classifier(
            self.config,
            self.bus,
            FolderCamera(self._photos),
            InferenceClient(self.config.inference),
            FieldStore(self.config.field_data_dir, "coop-7"),
        )
        self.classifier.start()

    def restart(self) -> None:
        self.classifier.stop()
        self.bus.stop()
        self.start()

    def close(self) -> None:
        self.classifier.stop()
        self.bus.stop()
        self._observer.stop()

    def answered(self, request_id: str, timeout_s: float = 10.0) -> list[str]:
        """Every request id answered, once ``request_id``'s answer has arrived."""
        with self.responses.condition:
            done = self.responses.condition.wait_for(
                lambda: any(r["request_id"] == request_id for r in self.responses.responses), timeout_s
            )
            ids = [r["request_id"] for r in self.responses.responses]
        assert done, f"no answer to {request_id}: {ids}"
        return ids
