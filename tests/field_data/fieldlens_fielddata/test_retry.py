from __future__ import annotations

import random

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from fieldlens_fielddata.retry import Backoff, is_transient


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"
    )


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (client_error("SlowDown", 503), True),
        (client_error("InternalError", 500), True),
        (client_error("Whatever", 502), True),
        (client_error("Throttling", 400), True),
        (EndpointConnectionError(endpoint_url="http://s3"), True),
        (ConnectionResetError(), True),
        (client_error("AccessDenied", 403), False),
        (client_error("NoSuchBucket", 404), False),
        (ValueError("bug"), False),
    ],
)
def test_transient_errors(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


def test_backoff_grows_exponentially_with_full_jitter_up_to_the_cap() -> None:
    backoff = Backoff(1.0, 10.0, random.Random(3))
    delays = [backoff.next_delay() for _ in range(8)]
    bounds = [1, 2, 4, 8, 10, 10, 10, 10]
    assert all(0 <= d <= b for d, b in zip(delays, bounds, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not lock-step
    backoff.reset()
    assert backoff.next_delay() <= 1.0
