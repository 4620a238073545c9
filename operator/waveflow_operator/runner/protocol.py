"""What the dispatcher and a launcher say to each other (docs/ARCHITECTURE.md, "The Launcher
protocol").

- :class:`Delivery` is one receive of one SQS message (sqs.py makes them); a redelivery is a new
  Delivery of the same ``sqs_message_id`` with a new receipt handle.
- :class:`JobRequest` is what a launcher is asked to run: the job's deterministic name, the
  parsed message and the Delivery it came in.
- ``launch`` answers :class:`Created` or :class:`Adopted` (a job of that name existed: a
  redelivery, a restart); an adopted job that already ended carries its result.
- ``recover`` lists what an earlier run left: :class:`Recovered` keeps running and finished jobs
  apart.
- Each job's *final* result (retries spent) reaches the dispatcher once through ``on_result``.
- ``drain(grace)`` lets running jobs finish within ``grace``; ``hurry()`` cuts that short.
- ``note_settling(result)`` keeps, durably, how far settling a failed job's message got (its
  result before the FAILURE; ``dead_lettered`` once copied to the dead-letter queue), and
  ``recover``/``launch`` give it back after a crash, so no settle step is repeated;
  ``forget(job_name)`` drops the note once the message is deleted. An invalid message (never a
  job) gets one note, keyed :func:`invalid_key_for`, once its dead letter is sent.

:func:`ending_outcome` is the ONE place that turns how a job ended (an exit code, a Job
condition) into an outcome and error code, for both launchers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from waveflow_job.contract import ErrorCode, ExitCode, JobSummary, Outcome, StemMessage, Task
from waveflow_operator.runner.spec import TASK_KEYS

__all__ = ["INVALID_PREFIX", "Adopted", "Created", "Delivery", "Ending", "JobRequest", "JobResult",
           "LaunchError", "Launcher", "Recovered", "ResultCallback", "ending_outcome",
           "invalid_key_for", "job_name_for"]


def job_name_for(task: Task, sqs_message_id: str) -> str:
    """``wf-<task>-<24 hex of sha256(MessageId)>``: DNS-1123 safe, ≤ 63 chars, deterministic."""
    digest = hashlib.sha256(sqs_message_id.encode("utf-8")).hexdigest()[:24]
    return f"wf-{TASK_KEYS[task].job_prefix}-{digest}"


#: The ledger key (and settling-note name) of a message that never becomes a job.
INVALID_PREFIX = "invalid-"


def invalid_key_for(sqs_message_id: str) -> str:
    """``invalid-<MessageId>``: an invalid message's key, stable across its redeliveries."""
    return f"{INVALID_PREFIX}{sqs_message_id}"


@dataclass(frozen=True)
class Delivery:
    """One receive of one SQS message, as SQS handed it over."""

    #: The SQS MessageId (stable across redeliveries; not the backend's message ``id``).
    sqs_message_id: str
    #: Valid for this receive only; a redelivery brings a new one.
    receipt_handle: str
    #: The raw body, byte-for-byte: the job parses it again (``--message-file``).
    body: str
    #: Epoch milliseconds when SQS accepted the message; None when SQS did not say.
    sent_timestamp_ms: int | None
    #: ``ApproximateReceiveCount``: this receive included.
    receive_count: int


@dataclass(frozen=True)
class JobRequest:
    """One message's job, as a launcher is asked to run it."""

    #: Deterministic (see :func:`job_name_for`): a redelivered message maps to the same job.
    job_name: str
    message: StemMessage
    delivery: Delivery

    @property
    def body(self) -> str:
        return self.delivery.body


@dataclass(frozen=True)
class JobResult:
    """A job's final outcome, as a launcher reports it (retries already spent)."""

    job_name: str
    outcome: Outcome
    #: For ``failed``: why (JOB_DEADLINE_EXCEEDED, JOB_BACKOFF_LIMIT, JOB_OOM_KILLED…).
    error_code: str | None = None
    error_message: str | None = None
    #: The job's one-line summary, when it wrote one.
    summary: JobSummary | None = None
    #: Wall time from launch to outcome when the launcher knows it better than the dispatcher.
    duration_seconds: float | None = None
    #: The runner already copied this message to the dead-letter queue (a note it left before
    #: the delete, read back after a crash): only the delete is still due.
    dead_lettered: bool = False


@dataclass(frozen=True)
class Created:
    """``launch`` started a new job."""


@dataclass(frozen=True)
class Adopted:
    """``launch`` found a job of that name; ``result`` is set when it has already ended."""

    result: JobResult | None = None


@dataclass(frozen=True)
class Recovered:
    """What an earlier run left behind: running jobs, and finished ones not yet reported."""

    running: frozenset[str] = frozenset()
    finished: Mapping[str, JobResult] = field(default_factory=dict)


class LaunchError(Exception):
    """``Launcher.launch`` could not start the job.

    ``retryable``: the message is returned to SQS after a backoff (API throttled, 5xx).
    Otherwise the message settles as failed with ``code`` (e.g. the API refused the Job).
    """

    def __init__(self, message: str, *, retryable: bool,
                 code: ErrorCode = ErrorCode.JOB_NOT_CREATED) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.code = code


ResultCallback = Callable[[JobResult], Awaitable[None]]


class Launcher(Protocol):
    """Runs jobs; the dispatcher never knows whether they are Pods or processes."""

    async def start(self, on_result: ResultCallback) -> None:
        """Begin; call ``on_result`` once per job with its final outcome."""

    async def recover(self) -> Recovered:
        """Jobs an earlier run of this launcher left (restart recovery)."""

    async def launch(self, request: JobRequest) -> Created | Adopted:
        """Start ``request.job_name``; idempotent. Raise :class:`LaunchError` when it cannot."""

    async def drain(self, grace_seconds: float) -> list[str]:
        """No new jobs; running ones get ``grace_seconds`` to finish, then are abandoned
        (they never report). Returns the abandoned jobs' names."""

    async def hurry(self) -> None:
        """Cut a drain in progress short (the second signal)."""

    async def note_settling(self, result: JobResult) -> None:
        """Keep ``result`` (and whether its message was dead-lettered) where a later run's
        ``recover``/``launch`` finds it. Raises nothing: a note that failed is logged."""

    async def forget(self, job_name: str) -> None:
        """The job's message is deleted: its settling note may go."""


@dataclass(frozen=True)
class Ending:
    """How a job's last attempt ended, in the terms both launchers can state."""

    #: The container's / process's exit code; None when it never exited on its own.
    exit_code: int | None
    #: Killed for memory: a pod's ``OOMKilled`` reason; locally, a SIGKILL the runner did not send.
    oom_killed: bool = False
    #: The task's deadline ended it (``activeDeadlineSeconds``).
    deadline_exceeded: bool = False
    #: The image never pulled (Kubernetes only).
    image_pull_failed: bool = False
    #: The job as a whole failed (a Job condition); False with exit 0 means it succeeded.
    failed: bool = False


def ending_outcome(ending: Ending) -> tuple[Outcome, ErrorCode | None]:
    """The outcome and error code of a job's end; the ONE rule for both launchers.

    Exit 0 → succeeded. Exit 3 (``podFailurePolicy: FailJob``) → rejected: the job told the
    backend itself. Otherwise failed, named by the first that applies: OOM, image pull,
    deadline, backoff limit.
    """
    if ending.exit_code == ExitCode.DONE and not ending.failed:
        return Outcome.SUCCEEDED, None
    if ending.exit_code == ExitCode.REJECTED:
        return Outcome.REJECTED, None
    if ending.oom_killed:
        return Outcome.FAILED, ErrorCode.JOB_OOM_KILLED
    if ending.image_pull_failed:
        return Outcome.FAILED, ErrorCode.JOB_IMAGE_PULL
    if ending.deadline_exceeded:
        return Outcome.FAILED, ErrorCode.JOB_DEADLINE_EXCEEDED
    return Outcome.FAILED, ErrorCode.JOB_BACKOFF_LIMIT
