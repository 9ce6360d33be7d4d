"""Where the outside world's errors become ours: one translation, used by every command and component.

botocore, pydantic, the socket layer, JSON and URL parsing each raise their own exceptions, with
messages written for the library's developers (``NoCredentialsError: Unable to locate
credentials``, ``OSError: [Errno 98] Address already in use``). A person needs to know what went
wrong *and what to do*, and a script needs an exit code that means one thing. As in httpx's
``map_exceptions``, the translation lives in one place: :func:`translate` turns a foreign
exception into a :class:`FieldlensError` of the right kind with a hint, and :func:`mapped_errors`
applies it around a block. Whoever catches the result prints ``one_line()`` and exits with its
``exit_code`` (the ExitCode table).

botocore is looked at by class name and module, not imported: the core must not need boto3 to
translate a socket error, and a device never imports it for nothing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import socket
from collections.abc import Iterator

from pydantic import ValidationError

from fieldlens_core.errors import (
    CannotConnectError,
    FieldlensError,
    InUseError,
    InvalidInputError,
    NotAuthorisedError,
    NotFoundError,
    TimedOutError,
)

CREDENTIALS_HINT = (
    "Give AWS credentials the usual way: AWS_PROFILE (see `aws configure`), or AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY; on a Greengrass core the token exchange service provides them"
)
REGION_HINT = "Pass --region REGION (for example --region eu-west-1) or set AWS_DEFAULT_REGION"

_ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidAccessKeyId",
        "ExpiredToken",
        "ExpiredTokenException",
        "SignatureDoesNotMatch",
        "AuthFailure",
    }
)
_MISSING_CODES = frozenset({"NoSuchBucket", "NoSuchKey", "ResourceNotFoundException", "NotFound", "404"})
_THROTTLE_CODES = frozenset(
    {"Throttling", "ThrottlingException", "SlowDown", "RequestLimitExceeded", "TooManyRequestsException"}
)
_INVALID_CODES = frozenset({"ValidationException", "InvalidParameterException", "InvalidRequest", "InvalidBucketName"})


def pydantic_problems(exc: ValidationError) -> str:
    """Every problem of a validation error as ``key: message``, joined by ``; `` (one line)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors())


def _botocore(exc: BaseException) -> FieldlensError | None:
    if not type(exc).__module__.startswith("botocore"):
        return None
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}:
        return NotAuthorisedError("no AWS credentials found", CREDENTIALS_HINT)
    if "NoRegionError" in names:
        return InvalidInputError("no AWS region given", REGION_HINT)
    if "ParamValidationError" in names:
        return InvalidInputError(f"AWS refused the request's parameters: {exc}")
    if names & {"ConnectTimeoutError", "ReadTimeoutError"}:
        return TimedOutError(f"AWS did not answer in time: {exc}", "Check the network, --region and --endpoint-url")
    if names & {"EndpointConnectionError", "ConnectionClosedError", "ProxyConnectionError", "SSLError"}:
        return CannotConnectError(f"cannot reach AWS: {exc}", "Check the network, --region and --endpoint-url")
    if "ClientError" in names:
        response = getattr(exc, "response", {}) or {}
        error = response.get("Error", {})
        code = str(error.get("Code", ""))
        operation = getattr(exc, "operation_name", "the call")
        what = f"AWS refused {operation}: {code} {error.get('Message', '')}".strip()
        if code in _ACCESS_CODES:
            return NotAuthorisedError(
                what,
                "The credentials in use lack this permission, or they expired: check `aws sts get-caller-identity`",
            )
        if code in _MISSING_CODES:
            return NotFoundError(what, "Check the bucket or resource name and --region")
        if code in _THROTTLE_CODES:
            return FieldlensError(what, "AWS is throttling this account: try again in a minute")
        if code in _INVALID_CODES:
            return InvalidInputError(what)
        return FieldlensError(what)
    return None


def _os(exc: OSError) -> FieldlensError | None:
    where = f": {exc.filename}" if exc.filename else ""
    if isinstance(exc, socket.gaierror):
        return CannotConnectError(f"cannot resolve the host name ({exc.strerror})", "Check the host in the URL")
    if exc.errno == errno.EADDRINUSE:
        return InUseError(f"address already in use{where}", "Stop what holds it, or choose another port")
    if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNRESET):
        return CannotConnectError(f"cannot connect: {exc.strerror}{where}", "Is the service running at that address?")
    if isinstance(exc, TimeoutError):
        return TimedOutError(f"timed out: {exc}")
    if isinstance(exc, FileNotFoundError):
        return NotFoundError(f"no such file or directory{where}")
    if isinstance(exc, PermissionError):
        return FieldlensError(f"permission denied{where}", "Run as a user that may read and write it")
    if exc.errno == errno.ENOSPC:
        return FieldlensError(f"no space left on the device{where}", "Free some disk space")
    return None


def translate(exc: BaseException) -> FieldlensError | None:
    """The project's error for a foreign exception, or None where it is no known outside failure (a bug)."""
    if isinstance(exc, FieldlensError):
        return exc
    if isinstance(exc, json.JSONDecodeError):
        return InvalidInputError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    if isinstance(exc, ValidationError):
        return InvalidInputError(f"invalid {exc.title}: {pydantic_problems(exc)}")
    if isinstance(exc, OSError):
        translated = _os(exc)
        if translated is not None:
            return translated
    return _botocore(exc)


@contextlib.contextmanager
def mapped_errors() -> Iterator[None]:
    """Run a block; a known outside failure leaves it as the project's error (the original chained)."""
    try:
        yield
    except FieldlensError:
        raise
    except Exception as exc:
        translated = translate(exc)
        if translated is None:
            raise
        raise translated from exc
