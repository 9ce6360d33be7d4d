"""One exception tree for fieldlens, and the closed set of error codes a response may carry.

Every failure that reaches a requester is a :class:`FieldlensError` whose ``code`` is one of
:class:`ErrorCode`. Code that catches a broader exception converts it here, once, so that a
response never carries a free-form or unknown code. The set is documented in the README
("Error codes"); adding a member is a contract change.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ExitCode(IntEnum):
    """The one table of exit codes, each with one meaning, for every command and component.

    ``fieldlens --help`` and the README print it (:data:`EXIT_MEANINGS`); a component's start-up
    failure and a CLI command both exit with one of these. Adding a member is a contract change.
    """

    OK = 0
    FAILED = 1
    INVALID_INPUT = 2
    CANNOT_CONNECT = 3
    NOT_AUTHORISED = 4
    TIMED_OUT = 5
    REJECTED = 6
    NOT_FOUND = 7
    IN_USE = 8
    ERROR_RESPONSE = 9
    INTERRUPTED = 130


EXIT_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "done (a component: stopped by SIGINT or SIGTERM)",
    ExitCode.FAILED: "failed for the reason its line names, or a bug (--log-level DEBUG shows the traceback)",
    ExitCode.INVALID_INPUT: "a flag, file, payload or configuration that does not validate",
    ExitCode.CANNOT_CONNECT: "cannot reach an MQTT broker, the Greengrass nucleus, the inference service or AWS",
    ExitCode.NOT_AUTHORISED: "no credentials, or credentials or a topic refused (AWS access denied, accessControl)",
    ExitCode.TIMED_OUT: "nothing answered within the time allowed",
    ExitCode.REJECTED: "the retrain gate refused the candidate",
    ExitCode.NOT_FOUND: "the input does not exist, or matched nothing",
    ExitCode.IN_USE: "a port or socket that something else holds",
    ExitCode.ERROR_RESPONSE: "a device answered with an error (classify prints it)",
    ExitCode.INTERRUPTED: "interrupted by Ctrl-C (128 + SIGINT, as shells report it)",
}


def exit_code_table() -> str:
    """The table as text lines, for ``fieldlens --help`` (the README holds the same table)."""
    return "\n".join(f"  {code.value:>3}  {EXIT_MEANINGS[code]}" for code in ExitCode)


class ErrorCode(StrEnum):
    """Codes a classify response may carry in ``error.code``."""

    BAD_REQUEST = "BAD_REQUEST"
    """The payload is not a JSON object, has a field of the wrong type, or an unknown field."""
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    """The request payload is larger than the configured limit (64 KiB by default)."""
    BUSY = "BUSY"
    """The request could not be answered within its time budget (admission by time), or the queue
    is full; the message says which and by how much. Retry later."""
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
    exit_code: ExitCode = ExitCode.FAILED
    """What a process exits with when this error ends it (a component's start-up, a CLI command)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        """What to do about it, in a sentence (how to give credentials, the valid form, the choices)."""

    def one_line(self) -> str:
        """The message and its hint as the one line a person reads (newlines folded)."""
        text = self.message if self.hint is None else f"{self.message}. {self.hint}"
        return " ".join(text.split())


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
    exit_code = ExitCode.INVALID_INPUT


class TrainingError(FieldlensError, ValueError):
    """A dataset, a training run or a training job that cannot give a model (a manifest edited by
    hand, no training images, a failed SageMaker job, an export that disagrees with torch)."""

    exit_code = ExitCode.INVALID_INPUT


class StartupError(FieldlensError):
    """A component cannot start. Its ``main()`` logs the message as one line (no traceback)
    and exits with ``exit_code``; the codes are documented in the README ("Troubleshooting")."""

    exit_code = ExitCode.CANNOT_CONNECT


class NucleusConnectionError(StartupError):
    """The Greengrass nucleus's IPC socket is missing, refuses our token, or did not answer."""

    exit_code = ExitCode.CANNOT_CONNECT


class BusAuthorizationError(StartupError):
    """The component's accessControl (or the broker's ACL) does not allow a topic it uses."""

    exit_code = ExitCode.NOT_AUTHORISED


class InvalidInputError(FieldlensError):
    """A flag, a file or a document given on the command line that does not validate."""

    exit_code = ExitCode.INVALID_INPUT


class NotFoundError(FieldlensError):
    """The input a command was pointed at does not exist, or matched nothing."""

    exit_code = ExitCode.NOT_FOUND


class InUseError(FieldlensError):
    """A port or socket that another process holds."""

    exit_code = ExitCode.IN_USE


class CannotConnectError(FieldlensError):
    """An endpoint (a broker, AWS, the inference service) that could not be reached."""

    exit_code = ExitCode.CANNOT_CONNECT


class NotAuthorisedError(FieldlensError):
    """No credentials, or credentials that were refused."""

    exit_code = ExitCode.NOT_AUTHORISED


class TimedOutError(FieldlensError):
    """Nothing answered within the time allowed."""

    exit_code = ExitCode.TIMED_OUT


class RejectedError(FieldlensError):
    """The retrain gate refused a candidate."""

    exit_code = ExitCode.REJECTED
