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
    {"ok": true, "model": {...}, "services": [NAME]}                              (ping)
    {"ok": false, "error": {"code": CODE, "message": TEXT}}

Error codes of the service: BAD_FRAME, UNKNOWN_OP, UNKNOWN_SERVICE, UNSUPPORTED_CONTENT_TYPE,
BODY_TOO_LARGE, BAD_IMAGE, NO_MODEL, INTERNAL. A client maps them all to INFERENCE_FAILED.
The successor of the Greengrass v1 connector's ``invoke_inference_service``.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

PREFIX = struct.Struct(">II")
MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
CONTENT_TYPES = ("image/jpeg", "image/png")


class ProtocolError(Exception):
    """The peer sent something that is not a frame, or closed the connection inside one."""


def encode_frame(header: dict[str, Any], body: bytes = b"") -> bytes:
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return PREFIX.pack(len(encoded), len(body)) + encoded + body


def send_frame(sock: socket.socket, header: dict[str, Any], body: bytes = b"") -> None:
    sock.sendall(encode_frame(header, body))


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    buffer = bytearray(count)
    view = memoryview(buffer)
    received = 0
    while received < count:
        got = sock.recv_into(view[received:], count - received)
        if got == 0:
            raise ProtocolError(f"connection closed after {received} of {count} bytes")
        received += got
    return bytes(buffer)


def recv_frame(sock: socket.socket, max_body: int = DEFAULT_MAX_BODY_BYTES) -> tuple[dict[str, Any], bytes] | None:
    """Read one frame; None when the peer closed the connection cleanly between frames.

    A body over ``max_body`` raises ProtocolError before it is read, so a huge frame costs no memory.
    """
    first = sock.recv(PREFIX.size, socket.MSG_WAITALL)
    if not first:
        return None
    if len(first) < PREFIX.size:
        raise ProtocolError("connection closed inside a frame prefix")
    header_length, body_length = PREFIX.unpack(first)
    if header_length > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {header_length} bytes is over {MAX_HEADER_BYTES}")
    if body_length > max_body:
        raise ProtocolError(f"body of {body_length} bytes is over {max_body}")
    try:
        header = json.loads(_recv_exactly(sock, header_length))
    except ValueError as exc:
        raise ProtocolError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("header must be a JSON object")
    return header, _recv_exactly(sock, body_length)
