"""The Unix-socket server of the inference service: one thread per connection.

ONNX Runtime releases the GIL while it runs, so concurrent callers overlap their decode,
socket and inference work. Malformed frames get a BAD_FRAME reply and the connection is
closed; nothing a caller sends can stop the server.
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

from fieldlens_core.inference.protocol import ProtocolError, recv_frame, send_frame
from fieldlens_inference.service import InferenceService, failure

log = logging.getLogger(__name__)


class SocketInUseError(RuntimeError):
    """Another process is already serving on this socket path."""


def _claim_socket_path(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
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
            try:
                frame = recv_frame(sock, self.server.max_body)
            except ProtocolError as exc:
                code = "BODY_TOO_LARGE" if "body of" in str(exc) else "BAD_FRAME"
                self._reply(sock, failure(code, str(exc)))
                return
            except OSError:
                return
            if frame is None:
                return
            header, body = frame
            try:
                reply = self.server.service.handle(header, body)
            except Exception as exc:
                log.exception("inference request failed")
                reply = failure("INTERNAL", f"{type(exc).__name__}: {exc}")
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

    def __init__(self, path: Path, service: InferenceService, max_body: int) -> None:
        _claim_socket_path(path)
        self.path = path
        self.service = service
        self.max_body = max_body
        self._thread: threading.Thread | None = None
        super().__init__(str(path), _Connection)
        os.chmod(path, 0o660)  # the components of one Greengrass core share a user and group

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="inference-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
