"""One exception tree for fieldlens, and the closed set of error codes a response may carry.

Every failure that reaches a requester is a :class:`FieldlensError` whose ``code`` is one of
:class:`ErrorCode`. Code that catches a broader exception converts it here, once, so that a
response never carries a free-form or unknown code. The set is documented in the README
("Error codes"); adding a member is a contract change.
"""

from __future__ import annotations

from enum import StrEnum

EXIT_STOPPED, EXIT_FAILED, EXIT_CONFIGURATION, EXIT_CANNOT_CONNECT, EXIT_NOT_AUTHORISED = 0, 1, 2, 3, 4
"""A component's exit codes: stopped by a signal; cannot start for another reason that its log
line names (no valid model package, the socket in use), or a bug; invalid configuration;
cannot reach the nucleus or the broker; an operation its accessControl forbids."""


class ErrorCode(StrEnum):
    """Codes a classify response may carry in ``error.code``."""

    BAD_REQUEST = "BAD_REQUEST"
    """The payload is not a JSON object, has a field of the wrong type, or an unknown field."""
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    """The request payload is larger than the configured limit (64 KiB by default)."""
    BUSY = "BUSY"
    """The bounded request queue is full; retry later."""
    CAMERA_UNAVAILABLE = "CAMERA_UNAVAILABLE"
    """The camera could not be opened or did not return a frame."""
    INFERENCE_UNAVAILABLE = "INFERENCE_UNAVAILABLE"
    """The local inference service is not running or its socket is not reachable."""
    INFERENCE_TIMEOUT = "INFERENCE_TIMEOUT"
    """The inference service did not answer within the configured timeout."""
    INFERENCE_FAILED = "INFERENCE_FAILED"
    """The inference service answered with an error (bad image, unknown service, no model)."""
    INTERNAL_ERROR = "INTERNAL_ERROR"
    """A bug: anything not covered above. The log has the traceback."""


class FieldlensError(Exception):
    """Base of every error fieldlens raises on purpose; carries a response code."""

    code: ErrorCode = ErrorCode.INTERNAL_ERROR
    exit_code: int = EXIT_FAILED
    """What a process exits with when this error ends it (a component's start-up, a CLI command)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequestError(FieldlensError):
    code = ErrorCode.BAD_REQUEST


class PayloadTooLargeError(FieldlensError):
    code = ErrorCode.PAYLOAD_TOO_LARGE


class BusyError(FieldlensError):
    code = ErrorCode.BUSY


class CameraUnavailableError(FieldlensError):
    code = ErrorCode.CAMERA_UNAVAILABLE


class InferenceUnavailableError(FieldlensError):
    code = ErrorCode.INFERENCE_UNAVAILABLE


class InferenceTimeoutError(FieldlensError):
    code = ErrorCode.INFERENCE_TIMEOUT


class InferenceFailedError(FieldlensError):
    code = ErrorCode.INFERENCE_FAILED


class ModelPackageError(FieldlensError):
    """A model package is incomplete, fails its sha256 check, or does not load."""

    code = ErrorCode.INFERENCE_FAILED


class ConfigurationError(FieldlensError):
    """Configuration that does not validate; never reaches a requester, stops a component."""

    code = ErrorCode.INTERNAL_ERROR
    exit_code = EXIT_CONFIGURATION


class TrainingError(FieldlensError, ValueError):
    """A dataset, a training run or a training job that cannot give a model (a manifest edited by
    hand, no training images, a failed SageMaker job, an export that disagrees with torch)."""

    exit_code = EXIT_CONFIGURATION


class StartupError(FieldlensError):
    """A component cannot start. Its ``main()`` logs the message as one line (no traceback)
    and exits with ``exit_code``; the codes are documented in the README ("Troubleshooting")."""

    exit_code = EXIT_CANNOT_CONNECT


class NucleusConnectionError(StartupError):
    """The Greengrass nucleus's IPC socket is missing, refuses our token, or did not answer."""

    exit_code = EXIT_CANNOT_CONNECT


class BusAuthorizationError(StartupError):
    """The component's accessControl (or the broker's ACL) does not allow a topic it uses."""

    exit_code = EXIT_NOT_AUTHORISED
