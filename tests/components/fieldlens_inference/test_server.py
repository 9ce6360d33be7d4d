from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fieldlens_core.inference.protocol import PREFIX, recv_frame, send_frame
from fieldlens_inference.model_manager import ModelManager
from fieldlens_inference.server import InferenceSocketServer, SocketInUseError
from fieldlens_inference.service import InferenceService
from tests.helpers.images import solid_jpeg

COLOURS = {"red": (240, 10, 10), "green": (10, 240, 10), "blue": (10, 10, 240)}


def connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(path))
    return sock


def classify(path: Path, label: str) -> str:
    with connect(path) as sock:
        send_frame(sock, {"op": "classify", "service": "tiny", "top_k": 1}, solid_jpeg(COLOURS[label]))
        frame = recv_frame(sock)
    assert frame is not None
    return str(frame[0]["predictions"][0]["label"])


def test_concurrent_callers_each_get_their_own_answer(tiny_server: Path) -> None:
    expected = [label for _ in range(20) for label in COLOURS]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda label: classify(tiny_server, label), expected))
    assert answers == expected


def test_a_bad_frame_gets_an_error_and_the_server_keeps_serving(tiny_server: Path) -> None:
    with connect(tiny_server) as sock:
        sock.sendall(PREFIX.pack(3, 0) + b"{{{")
        frame = recv_frame(sock)
        assert frame is not None and frame[0]["error"]["code"] == "BAD_FRAME"
        assert recv_frame(sock) is None  # the server closed that connection
    assert classify(tiny_server, "green") == "green"


def test_a_body_over_the_limit_is_refused_unread(tiny_server: Path) -> None:
    with connect(tiny_server) as sock:
        sock.sendall(PREFIX.pack(2, (1 << 20) + 1) + b"{}")
        frame = recv_frame(sock)
    assert frame is not None and frame[0]["error"]["code"] == "BODY_TOO_LARGE"


def test_a_stale_socket_file_is_reclaimed_and_a_live_one_is_not(tiny_package: Path, socket_dir: Path) -> None:
    path = socket_dir / "s.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # bound but not listening: what a crashed process leaves
    stale.close()
    manager = ModelManager(tiny_package)
    manager.load_initial()
    server = InferenceSocketServer(path, InferenceService(manager, {"tiny"}), 1 << 20)
    server.start()
    try:
        assert classify(path, "blue") == "blue"
        with pytest.raises(SocketInUseError):
            InferenceSocketServer(path, InferenceService(manager, {"tiny"}), 1 << 20)
    finally:
        server.stop()
    assert not path.exists()
