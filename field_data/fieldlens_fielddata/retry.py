"""Which failures are worth retrying, and how long to wait: exponential backoff with full jitter.

Full jitter (a uniform wait between 0 and the exponential bound) spreads a fleet of devices
that lost the network at the same moment, instead of having them retry in lock-step.
"""

from __future__ import annotations

import random

from botocore.exceptions import BotoCoreError, ClientError

RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "RequestLimitExceeded",
        "TooManyRequestsException",
    }
)


# Permanent errors that say the destination is wrong for every pair (credentials, bucket, policy):
# they stop the pass and keep everything queued. Any other 4xx is about one pair and quarantines it.
DESTINATION_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "NoSuchBucket",
        "AccountProblem",
        "KMS.AccessDeniedException",
        "KMS.DisabledException",
        "KMS.NotFoundException",
    }
)


def is_pair_specific(error: BaseException) -> bool:
    """A 4xx about this object alone (bad metadata, too large, bad digest): retrying never helps,
    and it must not hold up the pairs queued behind it."""
    if not isinstance(error, ClientError) or is_transient(error):
        return False
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return 400 <= status < 500 and error.response.get("Error", {}).get("Code") not in DESTINATION_CODES


def is_transient(error: BaseException) -> bool:
    """Throttling, 5xx and network errors: S3 or the network is down for a while, not misconfigured."""
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error.response.get("Error", {}).get("Code") in RETRYABLE_CODES or status >= 500 or status == 429
    return isinstance(error, BotoCoreError | ConnectionError | TimeoutError)


class Backoff:
    def __init__(self, initial_s: float = 1.0, maximum_s: float = 300.0, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.maximum_s = maximum_s
        self._rng = rng or random.Random()
        self.attempt = 0

    def next_delay(self) -> float:
        bound = min(self.maximum_s, self.initial_s * 2**self.attempt)
        self.attempt += 1
        return self._rng.uniform(0, bound)

    def reset(self) -> None:
        self.attempt = 0
