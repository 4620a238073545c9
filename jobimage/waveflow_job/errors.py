"""Every error the job raises, and what it means for the message.

    WaveflowError                    base; carries an ErrorCode and a human message
    ├── Rejected                     final: exit 3, no retry, FAILURE completion (retryable: false)
    │   ├── MessageError             the message cannot be parsed or validated
    │   ├── ObjectError              the S3 object is missing or too large
    │   ├── AudioError               the file cannot be decoded, is empty, corrupt or too long
    │   ├── DeletionRefused          process_duplicate_file will not delete this object
    │   └── SourceGone               the upload of a completed stem is gone: nothing to send
    └── Transient                    may succeed later: exit 1, the runner retries
        ├── StorageUnavailable       S3 unreachable, throttled or 5xx
        └── WebhookUndelivered       the backend did not accept a webhook in time

Lower-level errors (botocore, requests, soundfile) are translated into these in the module that
calls the library, so the CLI only has to map two classes to exit codes.
"""

from __future__ import annotations

from waveflow_job.contract import ErrorCode, ExitCode, InvalidMessage


class WaveflowError(Exception):
    """Base of every WaveFlow error: a machine-readable code and a message for humans."""

    exit_code: ExitCode = ExitCode.FAILED
    retryable: bool = True

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"


class Rejected(WaveflowError):
    """The message can never succeed; retrying would only repeat the failure."""

    exit_code = ExitCode.REJECTED
    retryable = False


class MessageError(Rejected):
    """The message is malformed; names the field and the problem."""

    def __init__(self, field: str, problem: str, code: ErrorCode = ErrorCode.MESSAGE_INVALID):
        super().__init__(code, f"{field}: {problem}")
        self.field = field
        self.problem = problem

    @classmethod
    def from_invalid(cls, error: InvalidMessage) -> MessageError:
        """Wrap the contract's parse error for the job's error handling."""
        return cls(error.field, error.problem, error.code)


class ObjectError(Rejected):
    """The object the message names is missing, or larger than we accept."""


class AudioError(Rejected):
    """The file is not audio we can turn into a truthful waveform."""


class DeletionRefused(Rejected):
    """process_duplicate_file refuses to delete: it might be an original."""

    def __init__(self, code: ErrorCode, message: str, *, silent: bool = False) -> None:
        super().__init__(code, message)
        #: True when no FAILURE completion must be sent (the stem's own analysed original).
        self.silent = silent


class SourceGone(Rejected):
    """The upload was deleted outside WaveFlow after its stem completed, and no answer can be
    given again truthfully: no FAILURE is sent (the stem completed), nothing else either."""

    silent = True

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.SOURCE_GONE, message)


class Transient(WaveflowError):
    """A dependency failed; the same message may succeed on a later attempt."""

    exit_code = ExitCode.FAILED
    retryable = True


class StorageUnavailable(Transient):
    """S3 could not be reached or answered with a retryable error."""


class WebhookUndelivered(Transient):
    """The backend did not accept a webhook within the retry budget."""
