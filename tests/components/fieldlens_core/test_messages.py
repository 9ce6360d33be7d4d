from __future__ import annotations

import json

import pytest

from fieldlens_core.errors import BadRequestError, ErrorCode, PayloadTooLargeError
from fieldlens_core.messages import (
    ClassifyResponse,
    parse_request,
    response_from_payload,
    salvage_request_id,
    utc_timestamp,
)


@pytest.mark.parametrize("payload", [b"", b"   ", b"\n"])
def test_an_empty_payload_is_a_valid_request_with_a_generated_id(payload: bytes) -> None:
    first, second = parse_request(payload), parse_request(payload)
    assert first.top_k is None and first.save is False and first.reply_topic is None
    assert len(first.request_id) == 32 and first.request_id != second.request_id


def test_every_field_is_read() -> None:
    payload = b'{"request_id": "r-1", "top_k": 3, "save": true, "reply_topic": "/response/x"}'
    request = parse_request(payload)
    assert (request.request_id, request.top_k, request.save, request.reply_topic) == ("r-1", 3, True, "/response/x")


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b'"hello"', "must be a JSON object, got str"),
        (b'{"top_k": "3"}', "top_k"),
        (b'{"top_k": 0}', "top_k"),
        (b'{"top_k": 101}', "top_k"),
        (b'{"top_k": 2.5}', "top_k"),
        (b'{"top_k": true}', "top_k"),
        (b'{"save": "yes"}', "save"),
        (b'{"request_id": 7}', "request_id"),
        (b'{"request_id": ""}', "request_id"),
        (b'{"request_id": "a\\u0000b"}', "printable"),
        (b'{"reply_topic": "/response/#"}', "no broker accepts there"),
    ],
)
def test_malformed_or_mistyped_requests_are_bad_requests(payload: bytes, fragment: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        parse_request(payload)
    assert fragment in caught.value.message
    assert caught.value.code is ErrorCode.BAD_REQUEST


def test_unknown_fields_are_listed_with_the_allowed_ones() -> None:
    with pytest.raises(BadRequestError) as caught:
        parse_request(b'{"topk": 3, "camera": "x"}')
    assert "unknown field(s): camera, topk" in caught.value.message
    assert "allowed: request_id, top_k, save, reply_topic" in caught.value.message


def test_a_payload_over_the_limit_is_too_large_before_it_is_parsed() -> None:
    payload = b"{" + b" " * 100 + b"}"
    assert parse_request(payload, max_bytes=len(payload)).save is False
    with pytest.raises(PayloadTooLargeError, match=f"{len(payload) + 1} bytes; the limit is {len(payload)}"):
        parse_request(payload + b" ", max_bytes=len(payload))


def test_a_rejected_request_keeps_its_own_id_when_it_has_a_usable_one() -> None:
    assert salvage_request_id(b'{"request_id": "mine", "top_k": "x"}') == "mine"
    assert salvage_request_id(b'{"request_id": 12}') != "12"
    assert len(salvage_request_id(b"{broken")) == 32
    assert len(salvage_request_id(b"[" * 100_000)) == 32  # deep nesting must not crash


def test_failure_envelope_has_the_error_and_no_predictions() -> None:
    response = ClassifyResponse.failure("r", "thing-1", ErrorCode.BUSY, "full")
    document = json.loads(response.to_payload())
    assert document["error"] == {"code": "BUSY", "message": "full"}
    assert "predictions" not in document and document["thing"] == "thing-1"
    assert response_from_payload(response.to_payload())["request_id"] == "r"


def test_timestamps_are_iso_8601_utc() -> None:
    stamp = utc_timestamp()
    assert stamp.endswith("Z") and "T" in stamp and len(stamp) == len("2026-01-01T00:00:00.000Z")


def test_a_non_response_is_refused() -> None:
    with pytest.raises(ValueError):
        response_from_payload(b'{"hello": 1}')
