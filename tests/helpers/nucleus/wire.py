"""The event-stream wire format and its RPC layer, as the nucleus and awscrt write them on the IPC socket.

Written from the protocol, not from the client: a message is a 12-byte prelude (total length,
headers length, CRC32 of those 8 bytes), typed headers, the payload and a CRC32 of everything
before it. Integers are big-endian. The RPC layer adds three INT32 headers to every message
(``:message-type``, ``:message-flags``, ``:stream-id``) and a string ``operation`` to the first
message of a stream; the client checks each of them, and its CRCs, so a mistake here shows as a
protocol error in the component, not as a quietly wrong answer.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass
from enum import IntEnum

PRELUDE_BYTES = 12
CRC_BYTES = 4
MAX_MESSAGE_BYTES = 16 * 1024 * 1024 + 128 * 1024  # aws-c-event-stream's payload cap plus its headers cap


class FramingError(ValueError):
    """Bytes that are not an event-stream message: a bad CRC, a length that does not add up, a bad header."""


class HeaderType(IntEnum):
    BOOL_TRUE = 0
    BOOL_FALSE = 1
    BYTE = 2
    INT16 = 3
    INT32 = 4
    INT64 = 5
    BYTE_BUF = 6
    STRING = 7
    TIMESTAMP = 8  # milliseconds since the epoch, as an int64
    UUID = 9


HeaderValue = bool | int | bytes | str | uuid.UUID

_FIXED = {
    HeaderType.BYTE: ">b",
    HeaderType.INT16: ">h",
    HeaderType.INT32: ">i",
    HeaderType.INT64: ">q",
    HeaderType.TIMESTAMP: ">q",
}


@dataclass(frozen=True)
class Header:
    name: str
    type: HeaderType
    value: HeaderValue

    @classmethod
    def string(cls, name: str, value: str) -> Header:
        return cls(name, HeaderType.STRING, value)

    @classmethod
    def int32(cls, name: str, value: int) -> Header:
        return cls(name, HeaderType.INT32, value)


@dataclass(frozen=True)
class Message:
    headers: tuple[Header, ...]
    payload: bytes

    def header(self, name: str, type_: HeaderType | None = None) -> HeaderValue | None:
        """A header's value by name, case-insensitively as aws-c-event-stream compares them; None when absent."""
        for header in self.headers:
            if header.name.lower() == name.lower() and (type_ is None or header.type == type_):
                return header.value
        return None


def _encode_header(header: Header) -> bytes:
    name = header.name.encode()
    if not 0 < len(name) < 256:
        raise FramingError(f"header name {header.name!r} must be 1-255 bytes")
    out = struct.pack(">B", len(name)) + name
    kind = header.type
    if kind in (HeaderType.BOOL_TRUE, HeaderType.BOOL_FALSE):
        return out + struct.pack(">B", kind)
    if kind in _FIXED:
        assert isinstance(header.value, int)
        return out + struct.pack(">B", kind) + struct.pack(_FIXED[kind], header.value)
    if kind == HeaderType.UUID:
        assert isinstance(header.value, uuid.UUID)
        return out + struct.pack(">B", kind) + header.value.bytes
    value = header.value.encode() if isinstance(header.value, str) else header.value
    assert isinstance(value, bytes)
    if len(value) > 0xFFFF:
        raise FramingError(f"header {header.name!r} is longer than 65535 bytes")
    return out + struct.pack(">BH", kind, len(value)) + value


def _decode_headers(data: bytes) -> tuple[Header, ...]:
    headers: list[Header] = []
    at = 0
    try:
        while at < len(data):
            (name_length,) = struct.unpack_from(">B", data, at)
            name = data[at + 1 : at + 1 + name_length].decode()
            at += 1 + name_length
            kind = HeaderType(data[at])
            at += 1
            value: HeaderValue
            if kind in (HeaderType.BOOL_TRUE, HeaderType.BOOL_FALSE):
                value = kind == HeaderType.BOOL_TRUE
            elif kind in _FIXED:
                (value,) = struct.unpack_from(_FIXED[kind], data, at)
                at += struct.calcsize(_FIXED[kind])
            elif kind == HeaderType.UUID:
                value = uuid.UUID(bytes=data[at : at + 16])
                at += 16
            else:
                (length,) = struct.unpack_from(">H", data, at)
                raw = data[at + 2 : at + 2 + length]
                if len(raw) != length:
                    raise FramingError(f"header {name!r} runs past the headers")
                value = raw.decode() if kind == HeaderType.STRING else bytes(raw)
                at += 2 + length
            headers.append(Header(name, kind, value))
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise FramingError(f"malformed headers: {exc}") from None
    return tuple(headers)


def encode(message: Message) -> bytes:
    headers = b"".join(_encode_header(h) for h in message.headers)
    total = PRELUDE_BYTES + len(headers) + len(message.payload) + CRC_BYTES
    lengths = struct.pack(">II", total, len(headers))
    prelude = lengths + struct.pack(">I", zlib.crc32(lengths))
    body = prelude + headers + message.payload
    return body + struct.pack(">I", zlib.crc32(body))


def frame_length(prelude: bytes) -> int:
    """The whole message's length from its 12-byte prelude, whose CRC is checked here."""
    total, headers_length, crc = struct.unpack(">III", prelude)
    if zlib.crc32(prelude[:8]) != crc:
        raise FramingError("prelude CRC mismatch")
    if total > MAX_MESSAGE_BYTES or total < PRELUDE_BYTES + headers_length + CRC_BYTES:
        raise FramingError(f"impossible lengths: total {total}, headers {headers_length}")
    return int(total)


def decode(frame: bytes) -> Message:
    """One whole message (as many bytes as :func:`frame_length` said), both CRCs checked."""
    total = frame_length(frame[:PRELUDE_BYTES])
    if len(frame) != total:
        raise FramingError(f"frame is {len(frame)} bytes, its prelude says {total}")
    (crc,) = struct.unpack(">I", frame[-CRC_BYTES:])
    if zlib.crc32(frame[:-CRC_BYTES]) != crc:
        raise FramingError("message CRC mismatch")
    (headers_length,) = struct.unpack(">I", frame[4:8])
    headers = _decode_headers(frame[PRELUDE_BYTES : PRELUDE_BYTES + headers_length])
    return Message(headers, frame[PRELUDE_BYTES + headers_length : -CRC_BYTES])


# The RPC layer (aws-c-event-stream's event_stream_rpc).

MESSAGE_TYPE, MESSAGE_FLAGS, STREAM_ID, OPERATION = ":message-type", ":message-flags", ":stream-id", "operation"
CONTENT_TYPE, SERVICE_MODEL_TYPE, VERSION = ":content-type", "service-model-type", ":version"
JSON = "application/json"
PROTOCOL_VERSION = "0.1.0"  # what the CONNECT's :version must say


class MessageType(IntEnum):
    APPLICATION_MESSAGE = 0
    APPLICATION_ERROR = 1
    PING = 2
    PING_RESPONSE = 3
    CONNECT = 4
    CONNECT_ACK = 5
    PROTOCOL_ERROR = 6
    INTERNAL_ERROR = 7


CONNECTION_ACCEPTED = 0x1
TERMINATE_STREAM = 0x2


@dataclass(frozen=True)
class RpcMessage:
    """A message with its RPC metadata read out; ``message`` keeps every header."""

    type: MessageType
    flags: int
    stream_id: int
    message: Message

    @property
    def payload(self) -> bytes:
        return self.message.payload

    @property
    def operation(self) -> str | None:
        value = self.message.header(OPERATION, HeaderType.STRING)
        return value if isinstance(value, str) else None


def rpc_message(
    type_: MessageType, flags: int = 0, stream_id: int = 0, headers: tuple[Header, ...] = (), payload: bytes = b""
) -> Message:
    metadata = (
        Header.int32(MESSAGE_TYPE, int(type_)),
        Header.int32(MESSAGE_FLAGS, flags),
        Header.int32(STREAM_ID, stream_id),
    )
    return Message(metadata + headers, payload)


def read_rpc(message: Message) -> RpcMessage:
    """The RPC metadata, which must all be INT32 headers (aws-c-event-stream refuses anything else)."""
    numbers: list[int] = []
    for name in (MESSAGE_TYPE, MESSAGE_FLAGS, STREAM_ID):
        value = message.header(name, HeaderType.INT32)
        if not isinstance(value, int) or isinstance(value, bool):
            raise FramingError(f"an RPC message needs an INT32 {name} header")
        numbers.append(value)
    kind, flags, stream_id = numbers
    try:
        return RpcMessage(MessageType(kind), flags, stream_id, message)
    except ValueError:
        raise FramingError(f"unknown :message-type {kind}") from None
