"""Client of the local inference service.

:class:`InferenceClient` keeps a small pool of open connections (one round trip per call,
no connect per request); :func:`invoke_inference` is the one-shot form, shaped like the
Greengrass v1 connector's ``invoke_inference_service(ServiceName=, ContentType=, Body=)``.
Every failure becomes one of InferenceUnavailableError, InferenceTimeoutError or
InferenceFailedError. A reply is validated with the same models a classify response is built
from (at least one prediction, confidences in [0, 1], a model name, version and sha256), so
whatever answers on the socket, a malformed reply is an INFERENCE_FAILED, not a crash.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fieldlens_core.config import InferenceClientConfig, default_inference_socket
from fieldlens_core.errors import InferenceFailedError, InferenceTimeoutError, InferenceUnavailableError
from fieldlens_core.inference.protocol import ProtocolError, recv_frame, send_frame
from fieldlens_core.messages import ModelInfo, Prediction

PEER_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid (Linux)


class InferenceResult(BaseModel):
    """A classify reply, validated: what the inference service promises, checked on arrival."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    predictions: list[Prediction] = Field(min_length=1)
    model: ModelInfo
    timing_ms: dict[str, float] = Field(default_factory=dict)


class Inference(Protocol):
    """What the classifier needs of the inference service (tests hand it a stand-in)."""

    def classify(self, body: bytes, content_type: str = "image/jpeg", top_k: int = 5) -> InferenceResult: ...


class InferenceClient:
    def __init__(self, config: InferenceClientConfig, pool_size: int = 4) -> None:
        self._config = config
        self._pool: list[socket.socket] = []
        self._pool_size = pool_size
        self._lock = threading.Lock()

    def classify(self, body: bytes, content_type: str = "image/jpeg", top_k: int = 5) -> InferenceResult:
        header = {"op": "classify", "service": self._config.service_name, "content_type": content_type, "top_k": top_k}
        reply = self._call(header, body)
        try:
            return InferenceResult.model_validate(reply)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(map(str, problem["loc"])) or "reply"
            message = f"malformed reply from the inference service: {where}: {problem['msg']}"
            raise InferenceFailedError(message) from None

    def ping(self) -> dict[str, Any]:
        return self._call({"op": "ping"}, b"")

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, []
        for sock in pool:
            sock.close()

    def _call(self, header: dict[str, Any], body: bytes) -> dict[str, Any]:
        sock, reused = self._checkout()
        try:
            reply = self._round_trip(sock, header, body)
        except (ProtocolError, ConnectionError) as exc:
            sock.close()
            if not reused:
                raise InferenceUnavailableError(f"inference service closed the connection: {exc}") from None
            # A pooled connection may have gone stale (the service restarted); classify is
            # idempotent, so one retry on a fresh connection is safe.
            sock = self._connect()
            try:
                reply = self._round_trip(sock, header, body)
            except (ProtocolError, ConnectionError) as exc2:
                sock.close()
                raise InferenceUnavailableError(f"inference service closed the connection: {exc2}") from None
            except BaseException:
                sock.close()
                raise
        except BaseException:
            sock.close()  # a timed-out connection may still deliver a late reply: never reuse it
            raise
        self._checkin(sock)
        if not reply.get("ok"):
            error = reply.get("error") or {}
            raise InferenceFailedError(f"{error.get('code', 'UNKNOWN')}: {error.get('message', 'no message')}")
        return reply

    def _round_trip(self, sock: socket.socket, header: dict[str, Any], body: bytes) -> dict[str, Any]:
        try:
            send_frame(sock, header, body)
            frame = recv_frame(sock)
        except TimeoutError:
            raise InferenceTimeoutError(f"inference service did not answer within {self._config.timeout_s}s") from None
        if frame is None:
            raise ProtocolError("connection closed before a reply")
        return frame[0]

    def _checkout(self) -> tuple[socket.socket, bool]:
        with self._lock:
            if self._pool:
                return self._pool.pop(), True
        return self._connect(), False

    def _checkin(self, sock: socket.socket) -> None:
        with self._lock:
            if len(self._pool) < self._pool_size:
                self._pool.append(sock)
                return
        sock.close()

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self._config.timeout_s)
        try:
            sock.connect(str(self._config.socket_path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise InferenceUnavailableError(
                f"inference service is not running at {self._config.socket_path} ({exc.strerror})"
            ) from None
        except TimeoutError:
            sock.close()
            raise InferenceTimeoutError(f"connecting to {self._config.socket_path} timed out") from None
        self._check_peer(sock)
        return sock

    def _check_peer(self, sock: socket.socket) -> None:
        """Send nothing (a camera frame is private) to a process that is not the inference service's user."""
        expected = self._config.peer_uid if self._config.peer_uid is not None else os.getuid()
        _, uid, _ = PEER_CREDENTIALS.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEER_CREDENTIALS.size)
        )
        if uid != expected:
            sock.close()
            raise InferenceUnavailableError(
                f"the process on {self._config.socket_path} runs as uid {uid}, not {expected}: refusing to send it "
                "frames (set inference.peerUid if the service runs as another user)"
            )


def invoke_inference(
    service_name: str,
    content_type: str,
    body: bytes,
    *,
    socket_path: Path | str | None = None,
    timeout_s: float = 5.0,
    top_k: int = 5,
) -> InferenceResult:
    """Classify one image with the local inference service (one connection, one call)."""
    config = InferenceClientConfig(
        service_name=service_name, socket_path=Path(socket_path or default_inference_socket()), timeout_s=timeout_s
    )
    client = InferenceClient(config, pool_size=0)
    try:
        return client.classify(body, content_type=content_type, top_k=top_k)
    finally:
        client.close()
