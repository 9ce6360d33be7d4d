"""The inference client against the real socket server (tiny model) and against misbehaving peers."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from fieldlens_core.config import InferenceClientConfig
from fieldlens_core.errors import InferenceFailedError, InferenceTimeoutError, InferenceUnavailableError
from fieldlens_core.inference.client import InferenceClient, invoke_inference
from fieldlens_inference.model_manager import ModelManager
from fieldlens_inference.server import InferenceSocketServer
from fieldlens_inference.service import InferenceService
from tests.helpers.images import solid_jpeg


def client_for(path: Path, timeout_s: float = 5.0, service: str = "tiny") -> InferenceClient:
    return InferenceClient(InferenceClientConfig(service_name=service, socket_path=path, timeout_s=timeout_s))


def test_invoke_inference_classifies_like_the_v1_connector_call(tiny_server: Path) -> None:
    result = invoke_inference("tiny", "image/jpeg", solid_jpeg((250, 5, 5)), socket_path=tiny_server, top_k=2)
    assert result.predictions[0].label == "red" and len(result.predictions) == 2
    assert result.model.name == "tiny-colour" and len(result.model.sha256) == 64
    assert set(result.timing_ms) == {"preprocess", "inference", "postprocess"}


def test_pooled_connections_are_reused(tiny_server: Path) -> None:
    client = client_for(tiny_server)
    for colour, label in [((0, 250, 0), "green"), ((0, 0, 250), "blue"), ((250, 0, 0), "red")]:
        assert client.classify(solid_jpeg(colour)).predictions[0].label == label
    assert len(client._pool) == 1
    client.close()


def test_no_service_running_is_unavailable(socket_dir: Path) -> None:
    with pytest.raises(InferenceUnavailableError, match="not running"):
        client_for(socket_dir / "absent.sock").classify(b"x")


def test_a_service_error_is_inference_failed_with_its_code(tiny_server: Path) -> None:
    with pytest.raises(InferenceFailedError, match="UNKNOWN_SERVICE"):
        client_for(tiny_server, service="other").classify(solid_jpeg((1, 2, 3)))
    with pytest.raises(InferenceFailedError, match="BAD_IMAGE"):
        client_for(tiny_server).classify(b"\xff\xd8\xffnot really a jpeg")


def test_a_service_that_never_answers_times_out(socket_dir: Path) -> None:
    path = socket_dir / "silent.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    try:
        with pytest.raises(InferenceTimeoutError, match="within 0.2s"):
            client_for(path, timeout_s=0.2).classify(solid_jpeg((1, 2, 3)))
    finally:
        listener.close()


def test_a_restarted_service_is_reached_again_without_an_error(tiny_package: Path, socket_dir: Path) -> None:
    path = socket_dir / "restart.sock"
    manager = ModelManager(tiny_package)
    manager.load_initial()

    def start() -> InferenceSocketServer:
        server = InferenceSocketServer(path, InferenceService(manager, {"tiny"}), 1 << 20)
        server.start()
        return server

    server = start()
    client = client_for(path)
    assert client.classify(solid_jpeg((250, 0, 0))).predictions[0].label == "red"
    pooled = client._pool[0]
    server.stop()
    pooled.shutdown(socket.SHUT_RDWR)  # what the dead service's end of the connection amounts to
    server = start()
    try:
        assert client.classify(solid_jpeg((0, 0, 250))).predictions[0].label == "blue"
    finally:
        server.stop()


class PoisonedService:
    """Answers every call on a real Unix socket with the same crafted reply."""

    def __init__(self, path: Path, reply: dict[str, object]) -> None:
        from fieldlens_core.inference.protocol import recv_frame, send_frame

        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen()

        def serve() -> None:
            while True:
                try:
                    connection, _ = self._server.accept()
                except OSError:
                    return
                with connection:
                    while recv_frame(connection) is not None:
                        send_frame(connection, reply)

        threading.Thread(target=serve, daemon=True).start()

    def close(self) -> None:
        self._server.close()


MODEL = {"name": "m", "version": "1", "sha256": "ab"}


@pytest.mark.parametrize(
    ("reply", "where"),
    [
        ({"ok": True, "predictions": [], "model": MODEL}, "predictions"),
        ({"ok": True, "predictions": [{"label": "x", "confidence": 7}], "model": MODEL}, "predictions.0.confidence"),
        ({"ok": True, "predictions": [{"label": 3, "confidence": 0.5}], "model": MODEL}, "predictions.0.label"),
        ({"ok": True, "predictions": [{"label": "x", "confidence": 0.5}]}, "model"),
        ({"ok": True, "predictions": "everything", "model": MODEL}, "predictions"),
    ],
)
def test_a_poisoned_reply_is_inference_failed_not_a_crash(
    socket_dir: Path, reply: dict[str, object], where: str
) -> None:
    service = PoisonedService(socket_dir / "poisoned.sock", reply)
    client = client_for(socket_dir / "poisoned.sock")
    try:
        with pytest.raises(InferenceFailedError, match=f"malformed reply from the inference service: {where}"):
            client.classify(solid_jpeg((1, 2, 3)))
    finally:
        client.close()
        service.close()


def test_the_client_sends_nothing_to_a_peer_running_as_another_user(tiny_server: Path) -> None:
    import os

    config = InferenceClientConfig(service_name="tiny", socket_path=tiny_server, peer_uid=os.getuid() + 1)
    client = InferenceClient(config)
    try:
        with pytest.raises(InferenceUnavailableError, match=f"runs as uid {os.getuid()}, not {os.getuid() + 1}"):
            client.classify(solid_jpeg((1, 2, 3)))
    finally:
        client.close()


def test_the_default_socket_is_in_a_private_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os
    import tempfile

    from fieldlens_core.config import default_inference_socket

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_inference_socket() == tmp_path / "fieldlens" / "inference.sock"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert default_inference_socket().parent == Path(tempfile.gettempdir()) / f"fieldlens-{os.getuid()}"
