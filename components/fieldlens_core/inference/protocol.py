"""The inference service's wire protocol over a Unix domain socket.

Both directions send frames; a connection carries any number of request/response pairs,
one at a time::

    frame  = header_length:u32be  body_length:u32be  header:JSON(UTF-8)  body:bytes

Requests (header):
    {"op": "classify", "service": NAME, "content_type": "image/jpeg", "top_k": 5}  body = the image
    {"op": "ping"}                                                              body = empty
Responses (header, empty body):
    {"ok": true, "predictions": [{"label": L, "confidence": P}, ...],
     "model": {"name", "version", "sha256"}, "timing_ms": {"preprocess", "inference", "postprocess"}}
    {"ok": true, "model": {...}, "variant": "fp32", "variant_reason": WHY, "services": [NAME],
     "operating_point": {...} or null}  (ping; the card's metrics.operating_point)
    {"ok": false, "error": {"code": CODE, "message": TEXT}}

Error codes of the service: :class:`WireCode`. A client maps them all to INFERENCE_FAILED.
The successor of the Greengrass v1 connector's ``invoke_inference_service``.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from enum import StrEnum
from typing import Any

from fieldlens_core.errors import FieldlensError

PREFIX = struct.Struct(">II")
MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
CONTENT_TYPES = ("image/jpeg", "image/png")


READ_CHUNK = 64 * 1024


class WireCode(StrEnum):
    """The inference service's error codes on the socket (a closed set, like ErrorCode for responses)."""

    BAD_FRAME = "BAD_FRAME"
    UNKNOWN_OP = "UNKNOWN_OP"
    UNKNOWN_SERVICE = "UNKNOWN_SERVICE"
    UNSUPPORTED_CONTENT_TYPE = "UNSUPPORTED_CONTENT_TYPE"
    BODY_TOO_LARGE = "BODY_TOO_LARGE"
    BAD_IMAGE = "BAD_IMAGE"
    NO_MODEL = "NO_MODEL"
    TOO_MANY_CONNECTIONS = "TOO_MANY_CONNECTIONS"
    INTERNAL = "INTERNAL"


class ProtocolError(FieldlensError):
    """The peer sent something that is not a frame, or closed the connection inside one."""

    wire_code = WireCode.BAD_FRAME  # what the server answers on the socket


class BodyTooLargeError(ProtocolError):
    """A frame declares a body over the receiver's limit; nothing of it was read."""

    wire_code = WireCode.BODY_TOO_LARGE


def encode_frame(header: dict[str, Any], body: bytes = b"") -> bytes:
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return PREFIX.pack(len(encoded), len(body)) + encoded + body


def send_frame(sock: socket.socket, header: dict[str, Any], body: bytes = b"") -> None:
    sock.sendall(encode_frame(header, body))


def _recv_exactly(sock: socket.socket, count: int, deadline: float | None = None) -> bytes:
    """``count`` bytes, read in chunks: memory grows with what has arrived, never with what a
    frame merely declares (48 half-sent 16 MB frames once took a service from 190 MB to 959 MB).
    With a ``deadline`` (time.monotonic()), a peer that sends too slowly gets ProtocolError."""
    buffer = bytearray()
    while len(buffer) < count:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProtocolError(f"frame not complete in time: {len(buffer)} of {count} bytes")
            sock.settimeout(remaining)
        try:
            chunk = sock.recv(min(READ_CHUNK, count - len(buffer)))
        except TimeoutError:
            if deadline is None:
                raise
            raise ProtocolError(f"frame not complete in time: {len(buffer)} of {count} bytes") from None
        if not chunk:
            raise ProtocolError(f"connection closed after {len(buffer)} of {count} bytes")
        buffer += chunk
    return bytes(buffer)


def recv_frame(
    sock: socket.socket, max_body: int = DEFAULT_MAX_BODY_BYTES, frame_timeout_s: float | None = None
) -> tuple[dict[str, Any], bytes] | None:
    """Read one frame; None when the peer closed the connection cleanly between frames.

    A body over ``max_body`` raises BodyTooLargeError before it is read, so a huge frame costs no
    memory. With ``frame_timeout_s``, the rest of a frame must arrive within that time of its
    first byte (waiting for a frame to start is the socket's own timeout).
    """
    first = sock.recv(1)
    if not first:
        return None
    deadline = None if frame_timeout_s is None else time.monotonic() + frame_timeout_s
    first += _recv_exactly(sock, PREFIX.size - 1, deadline)
    header_length, body_length = PREFIX.unpack(first)
    if header_length > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {header_length} bytes is over {MAX_HEADER_BYTES}")
    if body_length > max_body:
        raise BodyTooLargeError(f"body of {body_length} bytes is over {max_body}")
    try:
        header = json.loads(_recv_exactly(sock, header_length, deadline))
    except ValueError as exc:
        raise ProtocolError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("header must be a JSON object")
    return header, _recv_exactly(sock, body_length, deadline)
