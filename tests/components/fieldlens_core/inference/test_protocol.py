from __future__ import annotations

import socket

import pytest

from fieldlens_core.inference.protocol import PREFIX, ProtocolError, encode_frame, recv_frame, send_frame


def pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def test_frames_round_trip_with_binary_bodies() -> None:
    left, right = pair()
    send_frame(left, {"op": "classify", "top_k": 3}, b"\x00\xffbody")
    send_frame(left, {"op": "ping"})
    assert recv_frame(right) == ({"op": "classify", "top_k": 3}, b"\x00\xffbody")
    assert recv_frame(right) == ({"op": "ping"}, b"")
    left.close()
    assert recv_frame(right) is None  # clean close between frames


def test_an_oversized_body_is_refused_before_it_is_read() -> None:
    left, right = pair()
    left.sendall(PREFIX.pack(2, 10_000_000) + b"{}")
    with pytest.raises(ProtocolError, match="body of 10000000 bytes"):
        recv_frame(right, max_body=1000)


@pytest.mark.parametrize("raw", [PREFIX.pack(5, 0) + b"nope!", PREFIX.pack(2, 0) + b"[]", b"\x00\x00"])
def test_garbage_is_a_protocol_error(raw: bytes) -> None:
    left, right = pair()
    left.sendall(raw)
    left.close()
    with pytest.raises(ProtocolError):
        recv_frame(right)


def test_a_connection_closed_inside_a_body_is_a_protocol_error() -> None:
    left, right = pair()
    left.sendall(encode_frame({"op": "classify"}, b"0123456789")[:-4])
    left.close()
    with pytest.raises(ProtocolError, match="closed after"):
        recv_frame(right)
