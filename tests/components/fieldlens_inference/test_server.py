from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fieldlens_core.inference.protocol import PREFIX, recv_frame, send_frame
from fieldlens_inference.model_manager import ModelManager
from fieldlens_inference.server import InferenceSocketServer, SocketInUseError
from fieldlens_inference.service import InferenceService
from tests.helpers.images import solid_jpeg
from tests.helpers.waiting import wait_until

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


@pytest.fixture
def strict_server(tiny_package: Path, socket_dir: Path) -> Iterator[InferenceSocketServer]:
    """The real server with short limits, so each limit can be reached in a test."""
    manager = ModelManager(tiny_package, "fp32")
    manager.load_initial()
    path = socket_dir / "strict.sock"
    server = InferenceSocketServer(
        path, InferenceService(manager, {"tiny"}), 16 << 20, max_connections=4, frame_timeout_s=0.5
    )
    server.start()
    yield server
    server.stop()


def test_half_sent_frames_cost_no_memory_and_time_out(strict_server: InferenceSocketServer) -> None:
    """48 hung 16 MB half-frames once took the service from 190 MB to 959 MB."""
    import tracemalloc

    tracemalloc.start()
    try:
        socks = [connect(strict_server.path) for _ in range(3)]
        for sock in socks:
            sock.sendall(PREFIX.pack(2, 16 << 20) + b"{}" + b"x" * 1000)  # declares 16 MB, sends 1 KB
        replies = [recv_frame(sock) for sock in socks]  # each times out as a whole frame
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert all(r is not None and "not complete in time" in r[0]["error"]["message"] for r in replies)
    assert peak < 4 << 20  # three declared 16 MB bodies were never allocated
    for sock in socks:
        sock.close()
    assert classify(strict_server.path, "red") == "red"


def test_connections_over_the_cap_are_refused_and_the_server_keeps_serving(
    strict_server: InferenceSocketServer,
) -> None:
    held = [connect(strict_server.path) for _ in range(4)]  # idle: each holds a slot until the idle timeout (300 s)
    with connect(strict_server.path) as extra:
        reply = recv_frame(extra)
    assert reply is not None and reply[0]["error"]["code"] == "TOO_MANY_CONNECTIONS"
    for sock in held:
        sock.close()
    wait_until(lambda: strict_server.active_connections == 0, 10, "the closed connections to end")
    assert classify(strict_server.path, "blue") == "blue"


@pytest.mark.parametrize("fmt", ["TIFF", "BMP", "GIF", "PPM", "TGA"])
def test_only_the_declared_format_is_decoded(tiny_server: Path, fmt: str) -> None:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), COLOURS["red"]).save(buffer, format=fmt)
    with connect(tiny_server) as sock:
        send_frame(sock, {"op": "classify", "service": "tiny", "content_type": "image/jpeg"}, buffer.getvalue())
        frame = recv_frame(sock)
    assert frame is not None and frame[0]["error"]["code"] == "BAD_IMAGE"


def test_a_socket_directory_others_can_write_is_refused(tiny_package: Path, tmp_path: Path) -> None:
    """In a shared directory any local user could take the socket's name first and receive every frame."""
    manager = ModelManager(tiny_package, "fp32")
    manager.load_initial()
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(SocketInUseError, match="writable by no one else"):
        InferenceSocketServer(shared / "inference.sock", InferenceService(manager, {"tiny"}), 1 << 20)


def test_a_missing_socket_directory_is_created_private(tiny_package: Path, tmp_path: Path) -> None:
    manager = ModelManager(tiny_package, "fp32")
    manager.load_initial()
    server = InferenceSocketServer(tmp_path / "new" / "inference.sock", InferenceService(manager, {"tiny"}), 1 << 20)
    try:
        assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700
    finally:
        server.server_close()
