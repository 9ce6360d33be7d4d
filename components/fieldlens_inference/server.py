"""The Unix-socket server of the inference service: one thread per connection, a bounded number.

ONNX Runtime releases the GIL while it runs, so concurrent callers overlap their decode,
socket and inference work. Malformed frames get a BAD_FRAME reply and the connection is
closed; nothing a caller sends can stop the server. What a caller can make it hold is
bounded: ``max_connections`` connections (more get TOO_MANY_CONNECTIONS and are closed), a
frame must arrive within ``frame_timeout_s`` of its first byte, an idle connection is closed
after ``idle_timeout_s``, and a body is read as it arrives, never allocated up front.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import socketserver
import threading
from pathlib import Path
from typing import Any

from fieldlens_core.errors import FieldlensError
from fieldlens_core.inference.protocol import ProtocolError, WireCode, recv_frame, send_frame
from fieldlens_inference.service import InferenceService, failure

log = logging.getLogger(__name__)


class SocketInUseError(FieldlensError, RuntimeError):
    """Another process is already serving on this socket path."""


def _private_directory(folder: Path) -> None:
    """Create ``folder`` 0700, or accept an existing one only if this user owns it and no one else
    can write in it: anyone who can create a file there could squat the socket's name."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = folder.stat()
    if status.st_uid != os.getuid() or status.st_mode & 0o022:
        raise SocketInUseError(
            f"socket directory {folder} must belong to uid {os.getuid()} and be writable by no one else "
            f"(owner {status.st_uid}, mode {oct(status.st_mode & 0o777)}): use a private directory for socketPath"
        )


def _claim_socket_path(path: Path) -> None:
    _private_directory(path.parent)
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # stale: left by a process that died without cleaning up
        return
    finally:
        probe.close()
    raise SocketInUseError(f"another inference service is listening on {path}")


class _Connection(socketserver.BaseRequestHandler):
    server: InferenceSocketServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        while True:
            sock.settimeout(self.server.idle_timeout_s)
            try:
                frame = recv_frame(sock, self.server.max_body, self.server.frame_timeout_s)
            except ProtocolError as exc:
                self._reply(sock, failure(exc.wire_code, str(exc)))
                return
            except OSError:  # idle too long, or the caller went away
                return
            if frame is None:
                return
            header, body = frame
            try:
                reply = self.server.service.handle(header, body)
            except Exception as exc:
                log.exception("inference request failed")
                reply = failure(WireCode.INTERNAL, f"{type(exc).__name__}: {exc}")
            if not self._reply(sock, reply):
                return

    @staticmethod
    def _reply(sock: socket.socket, reply: dict[str, Any]) -> bool:
        try:
            send_frame(sock, reply)
            return True
        except OSError:
            return False


class InferenceSocketServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # the listen backlog: bursts of connecting callers must not get EAGAIN

    def __init__(
        self,
        path: Path,
        service: InferenceService,
        max_body: int,
        max_connections: int = 32,
        frame_timeout_s: float = 10.0,
        idle_timeout_s: float = 300.0,
    ) -> None:
        _claim_socket_path(path)
        self.path = path
        self.service = service
        self.max_body = max_body
        self.max_connections = max_connections
        self.frame_timeout_s = frame_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self._active = 0
        self._active_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        super().__init__(str(path), _Connection)
        os.chmod(path, 0o660)  # the components of one Greengrass core share a user and group

    @property
    def active_connections(self) -> int:
        with self._active_lock:
            return self._active

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._active_lock:
            admitted = self._active < self.max_connections
            self._active += admitted
        if not admitted:
            _Connection._reply(
                request, failure(WireCode.TOO_MANY_CONNECTIONS, f"{self.max_connections} connections are open")
            )
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._active_lock:
                self._active -= 1

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="inference-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
